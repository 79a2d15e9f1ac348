//! Value types of experiment keys that are more than a number or a string (device, precision,
//! scheduler, NaN policy, resume target) and the [`KeyType`] trait that lets the key table
//! name each key's type and render its value as TOML.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What the key table needs to know about the Rust type of a key.
pub trait KeyType {
    /// Human-readable type, used in docs and in type-error messages ("float", "bool", ...).
    const TYPE_NAME: &'static str;
    /// True for `Option<T>` keys, which may be left unset.
    const OPTIONAL: bool = false;
    /// The value as TOML, or `None` when an optional key is unset.
    fn to_toml_value(&self) -> Option<toml::Value>;
}

impl KeyType for bool {
    const TYPE_NAME: &'static str = "bool";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl KeyType for usize {
    const TYPE_NAME: &'static str = "integer >= 0";
    fn to_toml_value(&self) -> Option<toml::Value> {
        // TOML integers are i64; values beyond it cannot come from a TOML file anyway.
        Some(toml::Value::Integer(
            i64::try_from(*self).unwrap_or(i64::MAX),
        ))
    }
}

impl KeyType for u64 {
    const TYPE_NAME: &'static str = "integer >= 0";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::Integer(
            i64::try_from(*self).unwrap_or(i64::MAX),
        ))
    }
}

impl KeyType for i64 {
    const TYPE_NAME: &'static str = "integer";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::Integer(*self))
    }
}

impl KeyType for f64 {
    const TYPE_NAME: &'static str = "float";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::Float(*self))
    }
}

impl KeyType for String {
    const TYPE_NAME: &'static str = "string";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl KeyType for PathBuf {
    const TYPE_NAME: &'static str = "path";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string_lossy().into_owned()))
    }
}

impl<T: KeyType> KeyType for Option<T> {
    const TYPE_NAME: &'static str = T::TYPE_NAME;
    const OPTIONAL: bool = true;
    fn to_toml_value(&self) -> Option<toml::Value> {
        self.as_ref().and_then(KeyType::to_toml_value)
    }
}

/// Declares a closed set of lowercase string values: `FromStr`, `Display`, serde as a string,
/// [`KeyType`] and the list of accepted spellings for error messages.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, type_name = $type_name:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every accepted spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The spelling used in config files.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text, )+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    other => Err(format!(
                        "unknown value `{other}`, expected one of {}",
                        Self::NAMES.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(de::Error::custom)
            }
        }

        impl KeyType for $name {
            const TYPE_NAME: &'static str = $type_name;
            fn to_toml_value(&self) -> Option<toml::Value> {
                Some(toml::Value::String(self.as_str().to_owned()))
            }
        }
    };
}

string_enum! {
    /// Learning-rate schedule (`--lr_scheduler_type` of HF `TrainingArguments`).
    LrSchedulerType, type_name = "linear | constant | constant_with_warmup | cosine" {
        /// Linear warm-up, then linear decay to 0 at the last step (HF default).
        #[default]
        Linear = "linear",
        /// The peak learning rate throughout, no warm-up.
        Constant = "constant",
        /// Linear warm-up, then constant.
        ConstantWithWarmup = "constant_with_warmup",
        /// Linear warm-up, then half a cosine period down to 0.
        Cosine = "cosine",
    }
}

string_enum! {
    /// Numeric precision of the frozen base model.
    Precision, type_name = "auto | fp32 | fp16 | bf16" {
        /// fp16 on CUDA (the original's `model.half()`), fp32 on CPU.
        #[default]
        Auto = "auto",
        /// IEEE single precision.
        Fp32 = "fp32",
        /// IEEE half precision.
        Fp16 = "fp16",
        /// bfloat16.
        Bf16 = "bf16",
    }
}

impl Precision {
    /// The concrete precision on `device`: `Auto` becomes fp16 on a GPU (CUDA, Vulkan) and fp32
    /// on CPU.
    pub fn resolve(self, device: Device) -> Precision {
        match (self, device) {
            (Precision::Auto, Device::Cpu) => Precision::Fp32,
            (Precision::Auto, Device::Cuda(_) | Device::Vulkan) => Precision::Fp16,
            (concrete, _) => concrete,
        }
    }
}

string_enum! {
    /// What to do when a training loss or gradient is NaN/Inf.
    NanPolicy, type_name = "stop | skip" {
        /// Stop the run with an error naming the step.
        #[default]
        Stop = "stop",
        /// Skip that optimizer step (no update) and continue; counted in the log.
        Skip = "skip",
    }
}

/// Where the run executes: `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `vulkan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU backend (burn flex).
    #[default]
    Cpu,
    /// CUDA device with this index.
    Cuda(usize),
    /// The best Vulkan adapter wgpu finds (a discrete GPU before an integrated one, Mesa's
    /// lavapipe on a machine without a GPU).
    Vulkan,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid device `{s}`, expected `cpu`, `cuda`, `cuda:N` (N = GPU index) or `vulkan`"
            )
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "vulkan" => Ok(Device::Vulkan),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(index) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
                    index.parse().map(Device::Cuda).map_err(|_| bad())
                }
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
            Device::Vulkan => f.write_str("vulkan"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl KeyType for Device {
    const TYPE_NAME: &'static str = "cpu | cuda | cuda:N | vulkan";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// `resume_from_checkpoint`: `false` (default), `true` = the latest `checkpoint-N` in
/// `output_dir`, or the path of a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResumeFromCheckpoint {
    /// Start from scratch.
    #[default]
    No,
    /// The `checkpoint-N` directory with the largest N in `output_dir`.
    Latest,
    /// This checkpoint directory.
    Path(PathBuf),
}

impl ResumeFromCheckpoint {
    /// True unless `No`.
    pub fn is_set(&self) -> bool {
        !matches!(self, ResumeFromCheckpoint::No)
    }
}

impl Serialize for ResumeFromCheckpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResumeFromCheckpoint::No => s.serialize_bool(false),
            ResumeFromCheckpoint::Latest => s.serialize_bool(true),
            ResumeFromCheckpoint::Path(p) => s.collect_str(&p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ResumeFromCheckpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ResumeVisitor;
        impl Visitor<'_> for ResumeVisitor {
            type Value = ResumeFromCheckpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bool or a checkpoint directory path")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    ResumeFromCheckpoint::Latest
                } else {
                    ResumeFromCheckpoint::No
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.is_empty() {
                    return Err(E::custom("empty path; use `false` to start from scratch"));
                }
                Ok(ResumeFromCheckpoint::Path(PathBuf::from(v)))
            }
        }
        d.deserialize_any(ResumeVisitor)
    }
}

impl KeyType for ResumeFromCheckpoint {
    const TYPE_NAME: &'static str = "bool or path";
    fn to_toml_value(&self) -> Option<toml::Value> {
        Some(match self {
            ResumeFromCheckpoint::No => toml::Value::Boolean(false),
            ResumeFromCheckpoint::Latest => toml::Value::Boolean(true),
            ResumeFromCheckpoint::Path(p) => toml::Value::String(p.to_string_lossy().into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_syntax() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert_eq!("vulkan".parse::<Device>(), Ok(Device::Vulkan));
        for bad in [
            "gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:1:2", "vulkan:0",
        ] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(err.contains("cuda:N"), "{bad}: {err}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Vulkan.to_string(), "vulkan");
    }

    #[test]
    fn precision_auto_follows_device() {
        assert_eq!(Precision::Auto.resolve(Device::Cpu), Precision::Fp32);
        assert_eq!(Precision::Auto.resolve(Device::Cuda(1)), Precision::Fp16);
        assert_eq!(Precision::Auto.resolve(Device::Vulkan), Precision::Fp16);
        assert_eq!(Precision::Bf16.resolve(Device::Cpu), Precision::Bf16);
    }

    #[test]
    fn enum_error_lists_choices() {
        let err = "cosine_with_restarts"
            .parse::<LrSchedulerType>()
            .unwrap_err();
        assert!(
            err.contains("`linear`, `constant`, `constant_with_warmup`, `cosine`"),
            "{err}"
        );
    }
}
