"""Face models: detection, landmarks, alignment and embedding behind small protocols."""
