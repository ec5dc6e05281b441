//! The tags' settings: tags that cannot move (`WHARF_IMMUTABLE_TAGS`; see `oci::tags`).

use crate::auth::access::glob;
use crate::base::names::{RepositoryName, Tag};

/// `WHARF_IMMUTABLE_TAGS`: tags that, once set, can be neither moved nor deleted. Each pattern
/// is `[<repository glob>:]<tag glob>` (`*` matches any run of characters), e.g. `v*` or
/// `prod/*:release-*`; without a repository part it applies to every repository.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImmutableTags(Vec<(String, String)>);

impl ImmutableTags {
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        let patterns = value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(|p| match p.split_once(':') {
            Some((repo, tag)) if !repo.is_empty() && !tag.is_empty() => Ok((repo.to_owned(), tag.to_owned())),
            Some(_) => Err(format!("WHARF_IMMUTABLE_TAGS: \"{p}\" needs a repository and a tag pattern")),
            None => Ok(("*".to_owned(), p.to_owned())),
        });
        Ok(Self(patterns.collect::<std::result::Result<_, _>>()?))
    }

    pub fn protects(&self, name: &RepositoryName, tag: &Tag) -> bool {
        self.0.iter().any(|(repo, t)| glob(repo, name.as_str()) && glob(t, tag.as_str()))
    }
}
