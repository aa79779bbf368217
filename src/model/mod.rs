//! The transformer: configuration, parameters, checkpoints, KV cache and the forward pass,
//! written once against the backend op set.

pub mod checkpoint;
pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use forward::Model;
pub use kv_cache::KvCache;
pub use weights::{param_infos, ParamInfo, Weights};
