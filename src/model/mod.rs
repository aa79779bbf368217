//! Model configuration, weights and the forward pass.
