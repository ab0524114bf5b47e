"""Tables and plots of the pipeline's results."""
