//! Tag retention (`WHARF_RETENTION`): which tags garbage collection untags, as Harbor's tag
//! retention rules and zot's `storage.retention` decide it.
//!
//! ```json
//! [{"repositories": "ci/*", "tags": "pr-*", "keepLast": 3, "keepDays": 14}]
//! ```
//!
//! Among the tags of a repository matching `repositories` whose names match `tags` (globs, as in
//! `WHARF_RULES`), the `keepLast` most recently pushed stay, and so does any pushed within the
//! last `keepDays` days; either may stand alone, and a tag either keeps stays. The others are
//! untagged. A tag that matches no rule is never touched, nor is an immutable tag
//! (`WHARF_IMMUTABLE_TAGS`). Where several rules match a tag, it stays if any keeps it.

use crate::auth::access::glob;
use crate::base::de::Object;
use crate::base::names::{RepositoryName, Tag};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    repositories: String,
    tags: String,
    #[serde(default)]
    keep_last: Option<usize>,
    #[serde(default)]
    keep_days: Option<u64>,
}

/// The rules, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention(Vec<Rule>);

/// A tag as retention weighs it: its name and when it was pushed (ms since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub tag: Tag,
    pub at_ms: u64,
}

impl Retention {
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let rules: Vec<Object<Rule>> =
            serde_json::from_str(json).map_err(|e| format!("WHARF_RETENTION: not an array of rules: {e}"))?;
        let rules: Vec<Rule> = rules.into_iter().map(|r| r.0).collect();
        for rule in &rules {
            if rule.keep_last.is_none() && rule.keep_days.is_none() {
                return Err(format!(
                    "WHARF_RETENTION: the rule for \"{}\" / \"{}\" keeps nothing: give keepLast, keepDays or both",
                    rule.repositories, rule.tags
                ));
            }
        }
        Ok(Self(rules))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any rule applies to the repository (its tags are then weighed).
    pub fn covers(&self, name: &RepositoryName) -> bool {
        self.0.iter().any(|r| glob(&r.repositories, name.as_str()))
    }

    /// The tags of `name` to untag at `now_ms`, in the order given: those some rule matches and
    /// none keeps. `tags` are all the repository's tags, immutable ones left out by the caller.
    pub fn expired(&self, name: &RepositoryName, tags: &[Pushed], now_ms: u64) -> Vec<Tag> {
        let rules: Vec<&Rule> = self.0.iter().filter(|r| glob(&r.repositories, name.as_str())).collect();
        let mut matched = vec![false; tags.len()];
        let mut kept = vec![false; tags.len()];
        for rule in rules {
            let mut own: Vec<usize> = (0..tags.len()).filter(|&i| glob(&rule.tags, tags[i].tag.as_str())).collect();
            // Newest first; a tie goes to the name, so the choice is the same every run.
            own.sort_by(|&a, &b| {
                tags[b].at_ms.cmp(&tags[a].at_ms).then(tags[a].tag.as_str().cmp(tags[b].tag.as_str()))
            });
            let since = rule.keep_days.map(|d| now_ms.saturating_sub(d.saturating_mul(24 * 60 * 60 * 1000)));
            for (rank, &i) in own.iter().enumerate() {
                matched[i] = true;
                let recent = since.is_some_and(|s| tags[i].at_ms >= s);
                let among_last = rule.keep_last.is_some_and(|n| rank < n);
                kept[i] |= recent || among_last;
            }
        }
        (0..tags.len()).filter(|&i| matched[i] && !kept[i]).map(|i| tags[i].tag.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn pushed(tags: &[(&str, u64)]) -> Vec<Pushed> {
        tags.iter()
            .map(|(t, days_ago)| Pushed { tag: Tag::parse(t).unwrap(), at_ms: 100 * DAY - days_ago * DAY })
            .collect()
    }

    fn expired(rules: &str, repo: &str, tags: &[(&str, u64)]) -> Vec<String> {
        let name = RepositoryName::parse(repo).unwrap();
        let r = Retention::parse(rules).unwrap();
        r.expired(&name, &pushed(tags), 100 * DAY).into_iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_of_the_matching_tags_and_nothing_else_is_touched() {
        let rules = r#"[{"repositories": "ci/*", "tags": "pr-*", "keepLast": 2}]"#;
        let tags = [("pr-1", 9), ("pr-2", 5), ("pr-3", 1), ("pr-4", 3), ("main", 50)];
        assert_eq!(expired(rules, "ci/app", &tags), ["pr-1", "pr-2"]);
        assert_eq!(expired(rules, "prod/app", &tags), Vec::<String>::new(), "another repository");
    }

    #[test]
    fn keep_days_keeps_what_is_recent_and_either_rule_keeps_a_tag() {
        let days = r#"[{"repositories": "*", "tags": "*", "keepDays": 7}]"#;
        assert_eq!(expired(days, "a", &[("old", 8), ("new", 6), ("today", 0)]), ["old"]);
        let both = r#"[{"repositories": "*", "tags": "*", "keepLast": 1, "keepDays": 7}]"#;
        // The newest is kept by keepLast even when old; the recent ones by keepDays.
        assert_eq!(expired(both, "a", &[("old", 30), ("older", 40), ("new", 2)]), ["old", "older"]);
        assert_eq!(expired(both, "a", &[("old", 30), ("older", 40)]), ["older"]);
    }

    #[test]
    fn a_tag_any_matching_rule_keeps_stays() {
        let rules = r#"[{"repositories": "*", "tags": "*", "keepLast": 1},
                        {"repositories": "*", "tags": "release-*", "keepDays": 30}]"#;
        let tags = [("release-1", 100), ("release-2", 10), ("nightly", 1)];
        assert_eq!(expired(rules, "a", &tags), ["release-1"]);
    }

    #[test]
    fn rules_that_keep_nothing_or_are_malformed_are_refused() {
        assert!(Retention::parse(r#"[{"repositories": "*", "tags": "*"}]"#).is_err());
        assert!(Retention::parse(r#"[{"repositories": "*", "tags": "*", "keepLast": -1}]"#).is_err());
        assert!(Retention::parse(r#"[{"repositories": "*", "tag": "*", "keepLast": 1}]"#).is_err());
        assert!(Retention::parse(r#"{"repositories": "*"}"#).is_err());
        assert_eq!(Retention::parse("  ").unwrap(), Retention::default());
    }
}
