//! Configuration from the Worker's environment variables (wrangler.toml `[vars]`). Every
//! variable, its default and meaning is listed in README's "Configuration" section.

/// Largest manifest accepted (distribution-spec: registries SHOULD accept at least 4 MiB and
/// reject larger ones with 413).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `WHARF_READ_ONLY`: refuse every write with 405 UNSUPPORTED. Default false.
    pub read_only: bool,
    /// `WHARF_DELETE_ENABLED`: allow DELETE of manifests, tags and blobs. Default false, as in
    /// Distribution (`storage.delete.enabled`).
    pub delete_enabled: bool,
    /// `WHARF_ALLOWED_CLASSES`: comma-separated manifest classes (`image`, `plugin`) accepted on
    /// push. Empty (the default) disables the policy, as in Distribution.
    pub allowed_classes: Vec<String>,
    /// `WHARF_SELFTEST`: expose `POST /_wharf/selftest`, which runs the storage contract suite
    /// against the real bindings. For the end-to-end tests only. Default false.
    pub selftest: bool,
}

impl Config {
    /// Reads the configuration through `var` (absent variables take their defaults). An
    /// unreadable value is an error naming the variable: better to refuse to serve than to
    /// serve with a setting the operator did not mean.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let flag = |name: &str, default: bool| -> Result<bool, String> {
            match var(name).as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(format!("{name}: expected true or false, got {other:?}")),
            }
        };
        let allowed_classes: Vec<String> = var("WHARF_ALLOWED_CLASSES")
            .unwrap_or_default()
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(bad) = allowed_classes.iter().find(|c| *c != "image" && *c != "plugin") {
            return Err(format!(
                "WHARF_ALLOWED_CLASSES: unknown class {bad:?} (known: image, plugin)"
            ));
        }
        Ok(Self {
            read_only: flag("WHARF_READ_ONLY", false)?,
            delete_enabled: flag("WHARF_DELETE_ENABLED", false)?,
            allowed_classes,
            selftest: flag("WHARF_SELFTEST", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn absent_variables_take_defaults() {
        assert_eq!(from(&[]).unwrap(), Config::default());
    }

    #[test]
    fn variables_are_parsed() {
        let c = from(&[
            ("WHARF_READ_ONLY", "true"),
            ("WHARF_DELETE_ENABLED", "1"),
            ("WHARF_ALLOWED_CLASSES", "image, plugin"),
        ])
        .unwrap();
        assert!(c.read_only && c.delete_enabled);
        assert_eq!(c.allowed_classes, ["image", "plugin"]);
    }

    #[test]
    fn unreadable_values_are_errors_naming_the_variable() {
        assert!(
            from(&[("WHARF_READ_ONLY", "maybe")])
                .unwrap_err()
                .contains("WHARF_READ_ONLY")
        );
        assert!(
            from(&[("WHARF_ALLOWED_CLASSES", "image,weird")])
                .unwrap_err()
                .contains("weird")
        );
    }
}
