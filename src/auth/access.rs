//! What may be done to which repository: actions, scopes (as clients request them and tokens
//! carry them) and the configured rules.

use crate::base::de::{self, Members};
use serde::{Deserialize, Serialize};

/// A set of repository actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    const NAMES: [(&'static str, Actions); 3] = [("pull", Self::PULL), ("push", Self::PUSH), ("delete", Self::DELETE)];

    /// Reads action names; `*` is every action. Unknown names are `Err`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = Actions::NONE;
        for name in names {
            set = set.union(match name {
                "*" => Actions(7),
                _ => Self::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| *a)
                    .ok_or_else(|| format!("unknown action \"{name}\""))?,
            });
        }
        Ok(set)
    }
    /// Like [`Actions::parse`], ignoring names it does not know (for what clients request).
    pub fn parse_lenient<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(|n| Actions::parse([n]).ok()).fold(Actions::NONE, Actions::union)
    }
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn names(self) -> Vec<String> {
        Self::NAMES.iter().filter(|(_, a)| self.contains(*a)).map(|(n, _)| (*n).to_owned()).collect()
    }
}

/// One access entry: a requested scope `repository[(class)]:<name>:<actions>`, or an entry of a
/// token's `access` claim (the Docker token specification's JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses `type:name:actions`. Names contain no `:`, so the first and last `:` split it.
    pub fn parse_scope(scope: &str) -> Option<Self> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if name.is_empty() {
            return None;
        }
        let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        Some(Self { kind: kind.to_owned(), name: name.to_owned(), actions })
    }

    /// For a repository entry, its resource class: `repository(plugin)` is "plugin", plain
    /// `repository` none. `None` for other types (e.g. `registry`).
    pub fn repository_class(&self) -> Option<Option<&str>> {
        if self.kind == "repository" {
            return Some(None);
        }
        let class = self.kind.strip_prefix("repository(")?.strip_suffix(')')?;
        Some(Some(class))
    }

    pub fn actions(&self) -> Actions {
        Actions::parse_lenient(self.actions.iter().map(String::as_str))
    }
}

/// One rule as written: repositories matching `repositories` (`*` matches any run of
/// characters, slashes included) grant each listed user (`users`: name -> actions), and anyone
/// at all (`anonymous`), the listed actions. Other fields are refused: a misspelt one would
/// silently grant nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    repositories: String,
    #[serde(default, deserialize_with = "de::nullable")]
    users: Members<Vec<String>>,
    #[serde(default, deserialize_with = "de::nullable")]
    anonymous: Vec<String>,
    #[serde(default)]
    oidc: Option<de::Object<RawOidcGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidcGrant {
    claims: Members<String>,
    actions: Vec<String>,
}

/// What a rule grants tokens of `WHARF_OIDC_ISSUERS` whose claims match every glob of `claims`.
#[derive(Debug, Clone, PartialEq)]
struct OidcGrant {
    claims: Vec<(String, String)>,
    actions: Actions,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    /// A glob; for an OIDC grant `${claim}` stands for that claim of the token.
    pattern: String,
    users: Vec<(String, Actions)>,
    anonymous: Actions,
    oidc: Option<OidcGrant>,
}

/// The configured rules (`WHARF_RULES`, a JSON array of rules). Rights are the union of every
/// matching rule; a signed-in user also has what anyone has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn parse(json: &str) -> Result<Self, String> {
        // A JSON array of rules.
        let raw: Vec<de::Object<RawRule>> = serde_json::from_str(json).map_err(|e| format!("WHARF_RULES: {e}"))?;
        let mut rules = Vec::new();
        for de::Object(r) in raw {
            let users = r
                .users
                .0
                .into_iter()
                .map(|(u, a)| Ok((u, Actions::parse(a.iter().map(String::as_str))?)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("WHARF_RULES: {e}"))?;
            let anonymous =
                Actions::parse(r.anonymous.iter().map(String::as_str)).map_err(|e| format!("WHARF_RULES: {e}"))?;
            let oidc = match r.oidc {
                Some(de::Object(g)) => Some(OidcGrant {
                    claims: g.claims.0,
                    actions: Actions::parse(g.actions.iter().map(String::as_str))
                        .map_err(|e| format!("WHARF_RULES: {e}"))?,
                }),
                None => None,
            };
            rules.push(Rule { pattern: r.repositories, users, anonymous, oidc });
        }
        Ok(Rules(rules))
    }

    /// What `user` (`None`: anonymous) may do to `repository`.
    pub fn allowed(&self, user: Option<&str>, repository: &str) -> Actions {
        self.0.iter().filter(|r| glob(&r.pattern, repository)).fold(Actions::NONE, |acc, r| {
            let own =
                user.and_then(|u| r.users.iter().find(|(name, _)| name == u)).map(|(_, a)| *a).unwrap_or_default();
            acc.union(r.anonymous).union(own)
        })
    }
}

impl Rules {
    /// What a token of `WHARF_OIDC_ISSUERS` with `claims` may do to `repository`: the grants
    /// whose claim globs all match (a claim absent or not a string matches none), with the
    /// rule's `${claim}`s replaced by the token's; and what anyone may do.
    pub fn allowed_oidc(&self, claims: &serde_json::Map<String, serde_json::Value>, repository: &str) -> Actions {
        let claim = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        self.0.iter().fold(Actions::NONE, |acc, r| {
            let anyone = if glob(&r.pattern, repository) { r.anonymous } else { Actions::NONE };
            let granted = r.oidc.as_ref().filter(|g| {
                g.claims.iter().all(|(name, pattern)| claim(name).is_some_and(|v| glob(pattern, v)))
                    && substitute(&r.pattern, &claim).is_some_and(|p| glob(&p, repository))
            });
            acc.union(anyone).union(granted.map_or(Actions::NONE, |g| g.actions))
        })
    }
}

/// `pattern` with each `${name}` replaced by that claim; `None` when a claim is absent, not a
/// valid repository name, or holds a `*` (it would widen the pattern).
fn substitute<'a>(pattern: &str, claim: &impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}')?;
        let value = claim(&rest[start + 2..end])?;
        if value.contains('*') || crate::base::names::RepositoryName::parse(value).is_err() {
            return None;
        }
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `*` matches any run of characters (slashes too); everything else matches itself.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_parsed_from_the_right() {
        let a = Access::parse_scope("repository:a/b/c:pull,push").unwrap();
        assert_eq!((a.kind.as_str(), a.name.as_str()), ("repository", "a/b/c"));
        assert_eq!(a.actions(), Actions::PULL.union(Actions::PUSH));
        let p = Access::parse_scope("repository(plugin):x:push").unwrap();
        assert_eq!(p.repository_class(), Some(Some("plugin")));
        assert_eq!(a.repository_class(), Some(None));
        assert_eq!(Access::parse_scope("registry:catalog:*").unwrap().repository_class(), None);
        assert!(Access::parse_scope("repository::pull").is_none());
        assert!(Access::parse_scope("nonsense").is_none());
        assert_eq!(Access::parse_scope("repository:x:*").unwrap().actions(), Actions::parse(["*"]).unwrap());
    }

    #[test]
    fn oidc_grants_match_claims_and_fill_the_repository_from_them() {
        let rules = Rules::parse(
            r#"[{"repositories": "gh/${repository}", "oidc": {"claims": {"iss": "https://ci", "repository_owner": "acme"}, "actions": ["pull", "push"]}},
                {"repositories": "public/*", "anonymous": ["pull"]}]"#,
        )
        .unwrap();
        let claims = |owner: &str, repo: &str| {
            serde_json::json!({"iss": "https://ci", "repository_owner": owner, "repository": repo})
                .as_object()
                .unwrap()
                .clone()
        };
        let rw = Actions::PULL.union(Actions::PUSH);
        assert_eq!(rules.allowed_oidc(&claims("acme", "acme/app"), "gh/acme/app"), rw);
        assert_eq!(rules.allowed_oidc(&claims("acme", "acme/app"), "gh/acme/other"), Actions::NONE);
        assert_eq!(rules.allowed_oidc(&claims("evil", "acme/app"), "gh/acme/app"), Actions::NONE);
        assert_eq!(rules.allowed_oidc(&claims("acme", "acme/app"), "public/x"), Actions::PULL);
        // A claim that is no repository name, or that would widen the pattern, grants nothing.
        for bad in ["acme/*", "Acme/App", "acme//app", ""] {
            assert_eq!(rules.allowed_oidc(&claims("acme", bad), "gh/acme/app"), Actions::NONE, "{bad}");
        }
        let mut missing = claims("acme", "acme/app");
        missing.remove("repository");
        assert_eq!(rules.allowed_oidc(&missing, "gh/acme/app"), Actions::NONE);
        // Users' rules and OIDC grants are separate: an OIDC grant gives a user nothing.
        assert_eq!(rules.allowed(Some("acme"), "gh/acme/app"), Actions::NONE);
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        let cases = [
            ("*", "a/b", true),
            ("team/*", "team/app", true),
            ("team/*", "team/a/b", true),
            ("team/*", "teams/app", false),
            ("team", "team/x", false),
            ("*/base", "lib/base", true),
            ("*/base", "lib/basement", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (p, n, ok) in cases {
            assert_eq!(glob(p, n), ok, "{p} ~ {n}");
        }
    }

    #[test]
    fn rules_grant_the_union_of_matching_rules() {
        let rules = Rules::parse(
            r#"[{"repositories":"*","users":{"admin":["*"]}},
                {"repositories":"public/*","anonymous":["pull"],"users":{"ci":["push"]}},
                {"repositories":"team/*","users":{"alice":["pull","push"],"ci":["pull"]}}]"#,
        )
        .unwrap();
        assert_eq!(rules.allowed(None, "public/x"), Actions::PULL);
        assert_eq!(rules.allowed(None, "team/x"), Actions::NONE);
        assert_eq!(rules.allowed(Some("ci"), "public/x"), Actions::PULL.union(Actions::PUSH));
        assert_eq!(rules.allowed(Some("alice"), "team/x"), Actions::PULL.union(Actions::PUSH));
        assert_eq!(rules.allowed(Some("alice"), "other"), Actions::NONE);
        assert!(rules.allowed(Some("admin"), "anything/at/all").contains(Actions::DELETE));
        assert_eq!(rules.allowed(Some("mallory"), "public/x"), Actions::PULL);
    }

    #[test]
    fn malformed_rules_are_refused() {
        assert!(Rules::parse("{}").is_err());
        assert!(Rules::parse(r#"[{"repositories":"*","anonymous":["fly"]}]"#).is_err());
        assert!(Rules::parse(r#"[{"repos":"*"}]"#).is_err());
    }

    #[test]
    fn a_rule_says_each_thing_once() {
        let refused = [
            r#"[{"repositories":"a/*","repositories":"*","anonymous":["pull"]}]"#,
            r#"[{"repositories":"*","anonymous":[],"anonymous":["push"]}]"#,
            r#"[{"repositories":"*","users":{"ci":["pull"],"ci":["push"]}}]"#,
            r#"[["*",{"ci":["push"]},[]]]"#,
            r#"[{"repositories":"*","users":[["ci",["push"]]]}]"#,
            r#"[{"repositories":"*","anonymous":"pull"}]"#,
            r#"[{"repositories":null}]"#,
        ];
        for rules in refused {
            assert!(Rules::parse(rules).is_err(), "{rules}");
        }
        let e = Rules::parse(r#"[{"repos":"*"}]"#).unwrap_err();
        assert!(e.starts_with("WHARF_RULES: ") && e.contains("unknown field `repos`"), "{e}");
        // Null reads as absent.
        let rules = Rules::parse(r#"[{"repositories":"*","users":null,"anonymous":null}]"#).unwrap();
        assert_eq!(rules.allowed(None, "x"), Actions::NONE);
    }

    #[test]
    fn action_sets_intersect_and_name_themselves() {
        let pp = Actions::PULL.union(Actions::PUSH);
        assert_eq!(pp.intersect(Actions::PULL), Actions::PULL);
        assert_eq!(pp.names(), ["pull", "push"]);
        assert!(Actions::parse(["fly"]).is_err());
        assert_eq!(Actions::parse_lenient(["pull", "fly"]), Actions::PULL);
    }
}
