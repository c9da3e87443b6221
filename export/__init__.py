"""Training side: datasets, augmentation, training, ONNX export, quantisation, parity."""
