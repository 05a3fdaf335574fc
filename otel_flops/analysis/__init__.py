"""What is built on the counts: alpha-FLOPs, GPU peaks and MFU, the paper's experiments, comparison, HTML."""
