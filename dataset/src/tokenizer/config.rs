//! `tokenizer_config.json` of THUDM/chatglm-6b (reference §1.2): special-token strings and options.
//!
//! Absent file or keys fall back to the final ChatGLM-6B values. A special token given as a plain
//! string strips the whitespace on both sides of it in the text (HF default); one given as an
//! `AddedToken` object follows its `lstrip` / `rstrip` flags.

use std::path::Path;

use serde_json::Value;

use super::error::TokenizerError;

/// A registered HF special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSpec {
    pub content: String,
    /// Strip whitespace at the end of the text before the token.
    pub strip_left: bool,
    /// Strip whitespace at the start of the text after the token.
    pub strip_right: bool,
}

impl TokenSpec {
    fn plain(s: &str) -> TokenSpec {
        TokenSpec {
            content: s.to_string(),
            strip_left: true,
            strip_right: true,
        }
    }
}

/// The options the ChatGLM wrapper uses.
#[derive(Debug, Clone)]
pub(crate) struct ChatGlmConfig {
    pub bos: TokenSpec,
    pub eos: TokenSpec,
    pub unk: TokenSpec,
    pub pad: TokenSpec,
    pub mask: TokenSpec,
    /// Not an HF special token: `[gMASK]` in text is ordinary text.
    pub gmask: String,
    pub additional: Vec<TokenSpec>,
    pub remove_space: bool,
}

impl Default for ChatGlmConfig {
    fn default() -> Self {
        ChatGlmConfig {
            bos: TokenSpec::plain("<sop>"),
            eos: TokenSpec::plain("<eop>"),
            unk: TokenSpec::plain("<unk>"),
            pad: TokenSpec::plain("<pad>"),
            mask: TokenSpec::plain("[MASK]"),
            gmask: "[gMASK]".to_string(),
            additional: Vec::new(),
            remove_space: false,
        }
    }
}

impl ChatGlmConfig {
    /// The registered HF special tokens in HF `all_special_tokens` order (bos, eos, unk, pad, mask,
    /// additional).
    pub(crate) fn hf_special_tokens(&self) -> Vec<&TokenSpec> {
        let mut v = vec![&self.bos, &self.eos, &self.unk, &self.pad, &self.mask];
        v.extend(self.additional.iter());
        v
    }

    /// Parse the JSON text of `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<ChatGlmConfig, TokenizerError> {
        let err = |key: &str, detail: String| TokenizerError::Config {
            path: path.to_path_buf(),
            key: key.to_string(),
            detail,
        };
        let root: Value = serde_json::from_str(text).map_err(|e| {
            err(
                "(file)",
                format!(
                    "invalid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Some(obj) = root.as_object() else {
            return Err(err("(file)", "expected a JSON object".into()));
        };
        let mut cfg = ChatGlmConfig::default();
        let token = |key: &str, default: &TokenSpec| -> Result<TokenSpec, TokenizerError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default.clone()),
                Some(v) => token_spec(v).ok_or_else(|| {
                    err(
                        key,
                        format!(
                            "expected a string or an AddedToken object with \"content\", found {v}"
                        ),
                    )
                }),
            }
        };
        cfg.bos = token("bos_token", &cfg.bos)?;
        cfg.eos = token("eos_token", &cfg.eos)?;
        cfg.unk = token("unk_token", &cfg.unk)?;
        cfg.pad = token("pad_token", &cfg.pad)?;
        cfg.mask = token("mask_token", &cfg.mask)?;
        cfg.gmask = token("gmask_token", &TokenSpec::plain(&cfg.gmask))?.content;
        if let Some(v) = obj
            .get("additional_special_tokens")
            .filter(|v| !v.is_null())
        {
            let list = v
                .as_array()
                .ok_or_else(|| err("additional_special_tokens", "expected a list".into()))?;
            for t in list {
                cfg.additional.push(token_spec(t).ok_or_else(|| {
                    err(
                        "additional_special_tokens",
                        format!("entry {t} is not a string or AddedToken object"),
                    )
                })?);
            }
        }
        let flag = |key: &str| -> Result<bool, TokenizerError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(err(key, format!("expected true or false, found {v}"))),
            }
        };
        cfg.remove_space = flag("remove_space")?;
        if flag("do_lower_case")? {
            return Err(err(
                "do_lower_case",
                "true is not supported (ChatGLM-6B ships false; lower-casing would change every id); set it to false".into(),
            ));
        }
        match obj.get("num_image_tokens") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(0) => {}
            Some(v) => {
                return Err(err(
                    "num_image_tokens",
                    format!(
                        "{v} is not supported: only the final \"slim\" vocabulary (num_image_tokens = 0, ids = piece ids) \
                         is; files from before 2023-04-06 shift every id by 20000 — use the final THUDM/chatglm-6b files"
                    ),
                ));
            }
        }
        Ok(cfg)
    }
}

fn token_spec(v: &Value) -> Option<TokenSpec> {
    match v {
        Value::String(s) => Some(TokenSpec::plain(s)),
        Value::Object(o) => {
            let content = o.get("content")?.as_str()?.to_string();
            let b = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
            Some(TokenSpec {
                content,
                strip_left: b("lstrip"),
                strip_right: b("rstrip"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chatglm_config_and_rejects_unsupported_options() {
        let p = Path::new("tokenizer_config.json");
        let cfg = ChatGlmConfig::parse(
            r#"{"bos_token": "<sop>", "eos_token": {"content": "<eop>", "lstrip": true}, "remove_space": false,
                "num_image_tokens": 0, "gmask_token": "[gMASK]"}"#,
            p,
        )
        .unwrap();
        assert_eq!(cfg.bos, TokenSpec::plain("<sop>"));
        assert_eq!(
            cfg.eos,
            TokenSpec {
                content: "<eop>".into(),
                strip_left: true,
                strip_right: false
            }
        );
        assert_eq!(cfg.hf_special_tokens().len(), 5);
        let e = ChatGlmConfig::parse(r#"{"num_image_tokens": 20000}"#, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_image_tokens"), "{e}");
        assert!(ChatGlmConfig::parse(r#"{"do_lower_case": true}"#, p).is_err());
        assert!(
            ChatGlmConfig::parse(r#"{"pad_token": 3}"#, p)
                .unwrap_err()
                .to_string()
                .contains("pad_token")
        );
        assert!(ChatGlmConfig::parse("{", p).is_err());
    }
}
