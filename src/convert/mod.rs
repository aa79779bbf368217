//! Importing foreign checkpoint formats into Hugging Face directories.
