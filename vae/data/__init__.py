"""Face images: finding and decoding files (decode, numpy and PIL only), the uint8 cache and its tf.data pipelines
(dataset), and synthetic faces (synthetic, no TensorFlow either)."""
