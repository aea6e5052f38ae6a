"""Runtime: code-object metadata, the HIP module API, and the metadata-checked launcher."""
