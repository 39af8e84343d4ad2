"""The official Pix2Seq TensorFlow checkpoints: a numpy reader of TF2 checkpoints
(`tf_checkpoint`) and their conversion into this project's checkpoint (`convert`)."""
