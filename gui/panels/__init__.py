"""The panels the main window is assembled from; each shows numbers computed by `slimscope.core`."""
