//! Resolution of `model_name_or_path`: a local directory, or a Hugging Face id such as
//! `THUDM/chatglm-6b` found in the local Hugging Face hub cache
//! (`<hub>/models--THUDM--chatglm-6b/snapshots/<revision>/`, `refs/main` naming the revision
//! to prefer). Nothing is downloaded; when the model is nowhere, the error lists every place
//! that was searched and how to download it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The Hugging Face hub cache directory and the variable that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfCache {
    /// The hub directory holding `models--<org>--<name>/`.
    pub hub_dir: PathBuf,
    /// How it was chosen, e.g. `$HF_HUB_CACHE` or `~/.cache/huggingface/hub`.
    pub chosen_by: String,
}

impl HfCache {
    /// The cache the `huggingface_hub` library would use, from the process environment.
    pub fn from_env() -> Option<HfCache> {
        let var = |name: &str| std::env::var_os(name);
        HfCache::from_vars(
            var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")),
            var("HF_HOME"),
            var("HOME").or_else(|| var("USERPROFILE")),
        )
    }

    /// The cache chosen from explicit values: `hf_hub_cache` (`$HF_HUB_CACHE`), else
    /// `$HF_HOME/hub`, else `$HOME/.cache/huggingface/hub`. Empty values count as unset.
    pub fn from_vars(
        hf_hub_cache: Option<OsString>,
        hf_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Option<HfCache> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = set(hf_hub_cache) {
            return Some(HfCache {
                hub_dir: dir,
                chosen_by: "$HF_HUB_CACHE".into(),
            });
        }
        if let Some(home) = set(hf_home) {
            return Some(HfCache {
                hub_dir: home.join("hub"),
                chosen_by: "$HF_HOME/hub".into(),
            });
        }
        set(home).map(|home| HfCache {
            hub_dir: home.join(".cache").join("huggingface").join("hub"),
            chosen_by: "~/.cache/huggingface/hub".into(),
        })
    }
}

/// Where a resolved model lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `model_name_or_path` is this local directory.
    LocalDir,
    /// A snapshot of the Hugging Face cache.
    HubCache {
        /// The repository id, e.g. `THUDM/chatglm-6b`.
        repo_id: String,
        /// The snapshot directory name (a commit hash).
        revision: String,
    },
}

/// A model directory found for `model_name_or_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The directory that holds `config.json`, the tokenizer and the weights.
    pub dir: PathBuf,
    /// How it was found.
    pub source: ModelSource,
}

/// `model_name_or_path` was found nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelNotFound {
    /// The value of `model_name_or_path`.
    pub name: String,
    /// Every place searched, with what was missing there.
    pub searched: Vec<String>,
    /// True when the name can be a Hugging Face id (so download hints apply).
    pub is_hub_id: bool,
}

impl fmt::Display for ModelNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model `{}` not found; searched:", self.name)?;
        for place in &self.searched {
            write!(f, "\n  {place}")?;
        }
        if self.is_hub_id {
            write!(
                f,
                "\nDownload it into the Hugging Face cache with `huggingface-cli download {0}`, \
                 or clone it with `git lfs install && git clone https://huggingface.co/{0}` and \
                 set `model_name_or_path` to the cloned directory.",
                self.name
            )
        } else {
            write!(
                f,
                "\nSet `model_name_or_path` to a directory with config.json, ice_text.model and \
                 the weights, or to a Hugging Face id such as `THUDM/chatglm-6b`."
            )
        }
    }
}

impl std::error::Error for ModelNotFound {}

/// True when `name` has the shape of a Hugging Face repository id (`name` or `org/name`,
/// letters, digits, `-`, `_`, `.`).
pub fn is_hub_id(name: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = name.split('/').collect();
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| part_ok(p))
}

/// Resolves `model_name_or_path`: an existing directory wins; otherwise a Hugging Face id is
/// looked up in `cache` (see [`HfCache::from_env`]).
pub fn resolve_model(name: &str, cache: Option<&HfCache>) -> Result<ResolvedModel, ModelNotFound> {
    let local = Path::new(name);
    if local.is_dir() {
        return Ok(ResolvedModel {
            dir: local.to_path_buf(),
            source: ModelSource::LocalDir,
        });
    }
    let mut searched = vec![format!(
        "{} (local directory): {}",
        absolute(local).display(),
        absent(local)
    )];
    let hub_id = is_hub_id(name);
    if hub_id {
        match cache {
            Some(cache) => match lookup_in_cache(name, cache) {
                Ok(found) => return Ok(found),
                Err(place) => searched.push(place),
            },
            None => searched.push(
                "Hugging Face cache: none (neither $HF_HUB_CACHE, $HF_HOME nor $HOME is set)"
                    .into(),
            ),
        }
    }
    Err(ModelNotFound {
        name: name.to_owned(),
        searched,
        is_hub_id: hub_id,
    })
}

/// Looks `repo_id` up in one hub cache; `Err` describes what was missing there.
fn lookup_in_cache(repo_id: &str, cache: &HfCache) -> Result<ResolvedModel, String> {
    let repo_dir = cache
        .hub_dir
        .join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo_dir.join("snapshots");
    let place = |what: &str| {
        format!(
            "{} (Hugging Face cache, {}): {what}",
            snapshots.display(),
            cache.chosen_by
        )
    };
    let found = |revision: String| ResolvedModel {
        dir: snapshots.join(&revision),
        source: ModelSource::HubCache {
            repo_id: repo_id.to_owned(),
            revision,
        },
    };

    // refs/main names the snapshot that `huggingface-cli download` last fetched for `main`.
    if let Ok(reference) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let revision = reference.trim().to_owned();
        if !revision.is_empty() && snapshots.join(&revision).is_dir() {
            return Ok(found(revision));
        }
    }
    let entries = match std::fs::read_dir(&snapshots) {
        Ok(entries) => entries,
        Err(_) => return Err(place(absent(&snapshots))),
    };
    // Without a usable refs/main, take the most recently modified snapshot (name breaks ties).
    let newest = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            (modified, e.file_name().to_string_lossy().into_owned())
        })
        .max();
    match newest {
        Some((_, revision)) => Ok(found(revision)),
        None => Err(place("no snapshot directories")),
    }
}

fn absent(path: &Path) -> &'static str {
    if path.exists() {
        "not a directory"
    } else {
        "does not exist"
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn cache_in(dir: &Path) -> HfCache {
        HfCache {
            hub_dir: dir.to_path_buf(),
            chosen_by: "$HF_HUB_CACHE".into(),
        }
    }

    #[test]
    fn cache_choice_follows_huggingface_hub() {
        let c =
            HfCache::from_vars(Some("/a".into()), Some("/b".into()), Some("/h".into())).unwrap();
        assert_eq!(c.hub_dir, PathBuf::from("/a"));
        let c = HfCache::from_vars(None, Some("/b".into()), Some("/h".into())).unwrap();
        assert_eq!(c.hub_dir, PathBuf::from("/b/hub"));
        let c = HfCache::from_vars(Some("".into()), None, Some("/h".into())).unwrap();
        assert_eq!(c.hub_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(HfCache::from_vars(None, None, None), None);
    }

    #[test]
    fn hub_id_shape() {
        assert!(is_hub_id("THUDM/chatglm-6b"));
        assert!(is_hub_id("gpt2"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("./model"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
    }

    #[test]
    fn local_directory_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        fs::create_dir(&dir).unwrap();
        let got = resolve_model(dir.to_str().unwrap(), None).unwrap();
        assert_eq!(
            got,
            ResolvedModel {
                dir,
                source: ModelSource::LocalDir
            }
        );
    }

    #[test]
    fn cache_prefers_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--THUDM--chatglm-6b");
        for rev in ["aaaa", "bbbb"] {
            fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
        }
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), "aaaa\n").unwrap();
        let got = resolve_model("THUDM/chatglm-6b", Some(&cache_in(tmp.path()))).unwrap();
        assert_eq!(got.dir, repo.join("snapshots/aaaa"));
        assert_eq!(
            got.source,
            ModelSource::HubCache {
                repo_id: "THUDM/chatglm-6b".into(),
                revision: "aaaa".into()
            }
        );

        // A refs/main naming a missing snapshot falls back to an existing one.
        fs::write(repo.join("refs/main"), "cccc").unwrap();
        fs::remove_dir(repo.join("snapshots/aaaa")).unwrap();
        let got = resolve_model("THUDM/chatglm-6b", Some(&cache_in(tmp.path()))).unwrap();
        assert_eq!(got.dir, repo.join("snapshots/bbbb"));
    }

    #[test]
    fn not_found_lists_every_place_and_how_to_download() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model("THUDM/chatglm-6b-int4", Some(&cache_in(tmp.path()))).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.searched.len(), 2, "{text}");
        assert!(text.contains("(local directory): does not exist"), "{text}");
        let snapshots = tmp
            .path()
            .join("models--THUDM--chatglm-6b-int4")
            .join("snapshots");
        assert!(
            text.contains(&format!(
                "{} (Hugging Face cache, $HF_HUB_CACHE)",
                snapshots.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("huggingface-cli download THUDM/chatglm-6b-int4"),
            "{text}"
        );
        assert!(
            text.contains("git clone https://huggingface.co/THUDM/chatglm-6b-int4"),
            "{text}"
        );

        // Empty snapshots directory: still not found, with the reason.
        fs::create_dir_all(&snapshots).unwrap();
        let text = resolve_model("THUDM/chatglm-6b-int4", Some(&cache_in(tmp.path())))
            .unwrap_err()
            .to_string();
        assert!(text.contains("no snapshot directories"), "{text}");

        // A path-shaped name is not looked up in the cache.
        let err = resolve_model("./no/such/model", Some(&cache_in(tmp.path()))).unwrap_err();
        assert_eq!(err.searched.len(), 1);
        assert!(!err.is_hub_id);
    }
}
