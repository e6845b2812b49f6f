"""Everything above the model and the data, one package per layer; at the top, what every layer
shares (errors, inputs, outputs, distributed, random_state). Layers: docs/code.md."""
