//! `ChatGlmConfig`: the model directory's `config.json`, read with the real field names.
//!
//! Unknown extra fields are tolerated and kept (`extra`), so a config written back into a
//! checkpoint directory keeps everything the original had (`auto_map`, `architectures`, ...).
//! Special token ids always come from here; nothing in the model hard-codes 130001/130004.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GlmError;

/// Residual scale α of every GLM block. The reference builds each `GLMBlock` with its default
/// `num_layers = 28` instead of `config.num_layers`, so α = sqrt(2·28) for *every* config
/// (the tiny golden models depend on this).
pub const ALPHA: f64 = 7.483314773547883;

/// Hyper-parameters of a ChatGLM-6B-architecture model (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatGlmConfig {
    /// Rows of the embedding / output projection (130528 for ChatGLM-6B).
    pub vocab_size: usize,
    /// H (4096).
    pub hidden_size: usize,
    /// nh (32); head dim = hidden_size / num_attention_heads.
    pub num_attention_heads: usize,
    /// L (28).
    pub num_layers: usize,
    /// MLP width (16384 = 4H).
    #[serde(default)]
    pub inner_hidden_size: Option<usize>,
    /// LayerNorm epsilon (1e-5).
    #[serde(default = "default_eps")]
    pub layernorm_epsilon: f64,
    /// `<sop>`: start of the generated part; the mask is causal from here on (130004).
    pub bos_token_id: u32,
    /// `<eop>`: generation stops on it (130005).
    pub eos_token_id: u32,
    /// `[MASK]` (130000).
    pub mask_token_id: u32,
    /// `[gMASK]` (130001).
    pub gmask_token_id: u32,
    /// `<pad>` (3).
    #[serde(default)]
    pub pad_token_id: u32,
    /// 2D rotary (true for chatglm-6b).
    #[serde(default = "default_true")]
    pub position_encoding_2d: bool,
    /// Informational training context length (2048).
    #[serde(default = "default_max_seq")]
    pub max_sequence_length: usize,
    /// 0 = not quantized; 4 or 8 for THUDM's pre-quantized checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_bit: Option<u32>,
    /// P-Tuning v2 prefix length (None = no prefix encoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_seq_len: Option<usize>,
    /// P-Tuning v2 with the two-layer MLP reparameterisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_projection: Option<bool>,
    /// Every other field of the file, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_max_seq() -> usize {
    2048
}

impl ChatGlmConfig {
    /// Read `config.json` from a file or a model directory.
    pub fn from_path(path: &Path) -> Result<Self, GlmError> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| GlmError::Io {
            path: file.clone(),
            source: e,
        })?;
        let cfg: ChatGlmConfig = serde_json::from_str(&text).map_err(|e| GlmError::Config {
            path: file.clone(),
            message: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        cfg.validate().map_err(|message| GlmError::Config {
            path: file,
            message,
        })?;
        Ok(cfg)
    }

    /// Check the shape relations the network relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} must be a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let hd = self.head_dim();
        if self.position_encoding_2d && !hd.is_multiple_of(4) {
            return Err(format!(
                "head dim {hd} must be a multiple of 4 for 2D rotary"
            ));
        }
        if !self.position_encoding_2d && !hd.is_multiple_of(2) {
            return Err(format!("head dim {hd} must be even for rotary"));
        }
        if self.num_layers == 0 || self.vocab_size == 0 {
            return Err("num_layers and vocab_size must be positive".into());
        }
        if let Some(b) = self.quantization_bit
            && ![0, 4, 8].contains(&b)
        {
            return Err(format!("quantization_bit {b} is not 0, 4 or 8"));
        }
        Ok(())
    }

    /// Head dimension hd = H / nh.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// MLP width (defaults to 4H).
    pub fn inner_size(&self) -> usize {
        self.inner_hidden_size.unwrap_or(4 * self.hidden_size)
    }

    /// Channels rotated per position row: hd/2 with 2D rotary, hd otherwise.
    pub fn rotary_dim(&self) -> usize {
        if self.position_encoding_2d {
            self.head_dim() / 2
        } else {
            self.head_dim()
        }
    }

    /// Width of one prefix-encoder row: 2·L·H (key and value for every layer).
    pub fn prefix_row_width(&self) -> usize {
        2 * self.num_layers * self.hidden_size
    }

    /// Serialise back to the `config.json` layout (known fields plus the preserved extras).
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The real ChatGLM-6B shape (config.json of THUDM/chatglm-6b), for benchmarks and plans.
    pub fn chatglm_6b() -> Self {
        Self {
            vocab_size: 130528,
            hidden_size: 4096,
            num_attention_heads: 32,
            num_layers: 28,
            inner_hidden_size: Some(16384),
            layernorm_epsilon: 1e-5,
            bos_token_id: 130004,
            eos_token_id: 130005,
            mask_token_id: 130000,
            gmask_token_id: 130001,
            pad_token_id: 3,
            position_encoding_2d: true,
            max_sequence_length: 2048,
            quantization_bit: None,
            pre_seq_len: None,
            prefix_projection: None,
            extra: Map::new(),
        }
    }

    /// A model of the ChatGLM-6B family with another size (same special ids).
    pub fn with_shape(
        hidden: usize,
        layers: usize,
        heads: usize,
        inner: usize,
        vocab: usize,
    ) -> Self {
        Self {
            hidden_size: hidden,
            num_layers: layers,
            num_attention_heads: heads,
            inner_hidden_size: Some(inner),
            vocab_size: vocab,
            ..Self::chatglm_6b()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_config_and_keeps_extras() {
        let text = r#"{"architectures":["ChatGLMModel"],"bos_token_id":130004,"eos_token_id":130005,
            "mask_token_id":130000,"gmask_token_id":130001,"pad_token_id":3,"hidden_size":4096,
            "inner_hidden_size":16384,"layernorm_epsilon":1e-05,"max_sequence_length":2048,
            "model_type":"chatglm","num_attention_heads":32,"num_layers":28,"position_encoding_2d":true,
            "torch_dtype":"float16","use_cache":true,"vocab_size":130528}"#;
        let c: ChatGlmConfig = serde_json::from_str(text).unwrap();
        assert_eq!(
            c,
            ChatGlmConfig {
                extra: c.extra.clone(),
                ..ChatGlmConfig::chatglm_6b()
            }
        );
        assert_eq!(c.extra["torch_dtype"], "float16");
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.rotary_dim(), 64);
        assert_eq!(c.prefix_row_width(), 229376);
        let back = c.to_json_value();
        assert_eq!(back["model_type"], "chatglm");
        assert!(back.get("pre_seq_len").is_none());
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut c = ChatGlmConfig::chatglm_6b();
        c.num_attention_heads = 3;
        assert!(c.validate().is_err());
    }
}
