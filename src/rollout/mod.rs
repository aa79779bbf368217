//! Generation: batched prefill and decode with sampling.
