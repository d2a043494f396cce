//! The in-memory store: the reference implementation of [`crate::Store`].
