"""Derived approximate-nearest-neighbour indexes over face embeddings (ids are catalog face ids)."""
