//! The `tokenize` stage plugin (in progress).
