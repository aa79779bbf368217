//! The learning-rate schedule: linear warm-up, then constant or cosine decay.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    #[default]
    Constant,
    Cosine,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    pub lr: f32,
    pub warmup_steps: u64,
    pub decay: Decay,
    /// Steps at which the cosine reaches `min_lr_ratio · lr`.
    pub total_steps: u64,
    pub min_lr_ratio: f32,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule { lr: 1e-6, warmup_steps: 0, decay: Decay::Constant, total_steps: 0, min_lr_ratio: 0.0 }
    }
}

impl LrSchedule {
    /// The learning rate of optimizer step `step` (counted from 1): `lr · step / warmup` during
    /// the warm-up, so the first step already moves the weights.
    pub fn lr_at(&self, step: u64) -> f32 {
        let step = step.max(1);
        if step <= self.warmup_steps {
            return self.lr * step as f32 / self.warmup_steps as f32;
        }
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let min = self.lr as f64 * self.min_lr_ratio as f64;
                (min + (self.lr as f64 - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule { lr: 1.0, warmup_steps: 4, decay: Decay::Cosine, total_steps: 14, min_lr_ratio: 0.1 };
        assert_eq!(s.lr_at(1), 0.25);
        assert_eq!(s.lr_at(4), 1.0);
        assert!((s.lr_at(9) - 0.55).abs() < 1e-6);
        assert!((s.lr_at(14) - 0.1).abs() < 1e-6);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-6);
        let c = LrSchedule { decay: Decay::Constant, ..s };
        assert_eq!(c.lr_at(50), 1.0);
    }
}
