"""Training of the parts that no package ships: a fine-tuned classifier and its exit heads."""
