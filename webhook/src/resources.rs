//! Requests and limits for one container: filled from the effective policy, kept inside the
//! namespace's LimitRanges, with warnings about user values the Pod would be rejected for.

use crate::policy::{EffectiveResources, PolicyQuantity};
use crate::quantity::{Amount, Format};
use k8s_openapi::api::core::v1::{Container, LimitRange, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, BTreeSet};

/// The tightest `Container` constraints of a namespace's LimitRanges, per resource name.
#[derive(Debug, Default, Clone)]
pub struct Bounds {
    min: BTreeMap<String, (Amount, Format)>,
    max: BTreeMap<String, (Amount, Format)>,
    ratio: BTreeMap<String, Amount>,
    /// Resources for which a LimitRange defaults the limit itself when it is missing.
    defaulted_limits: BTreeSet<String>,
}

impl Bounds {
    /// Reads the `Container` items of `limit_ranges`; a quantity the API server stored is always
    /// valid, so an unparsable one (which cannot happen) is skipped rather than failing a review.
    pub fn new<'a>(limit_ranges: impl IntoIterator<Item = &'a LimitRange>) -> Self {
        let mut bounds = Self::default();
        let items = limit_ranges
            .into_iter()
            .filter_map(|lr| lr.spec.as_ref())
            .flat_map(|spec| &spec.limits)
            .filter(|item| item.type_ == "Container");
        let parsed = |map: &Option<BTreeMap<String, Quantity>>| {
            map.iter()
                .flatten()
                .filter_map(|(name, q)| Some((name.clone(), Amount::parse_with_format(&q.0).ok()?)))
                .collect::<Vec<_>>()
        };
        for item in items {
            for (name, (amount, format)) in parsed(&item.min) {
                let slot = bounds.min.entry(name).or_insert((amount, format));
                if amount > slot.0 {
                    *slot = (amount, format);
                }
            }
            for (name, (amount, format)) in parsed(&item.max) {
                let slot = bounds.max.entry(name).or_insert((amount, format));
                if amount < slot.0 {
                    *slot = (amount, format);
                }
            }
            for (name, (amount, _)) in parsed(&item.max_limit_request_ratio) {
                let slot = bounds.ratio.entry(name).or_insert(amount);
                *slot = (*slot).min(amount);
            }
            bounds
                .defaulted_limits
                .extend(item.default.iter().flatten().map(|(name, _)| name.clone()));
        }
        bounds
    }

    /// Whether no LimitRange constrains containers.
    pub fn is_empty(&self) -> bool {
        self.min.is_empty() && self.max.is_empty() && self.ratio.is_empty()
    }
}

/// Warnings about containers, one per problem however many containers have it: a Deployment
/// of 40,000 containers with an invalid quantity in each got 40,000 warnings (747 MB, and a
/// response the API server would have cut at 4 KiB anyway).
#[derive(Debug, Default)]
pub struct ContainerWarnings {
    problems: Vec<Problem>,
}

/// One problem: what the first container with it was told, and who else has it.
#[derive(Debug)]
struct Problem {
    /// What kind of problem, and with which value (`limits.memory`), without the values.
    key: String,
    /// The message about the first container, values included.
    first: String,
    /// The first containers with it, [`NAMED`] at most.
    names: Vec<String>,
    /// How many containers have it.
    count: usize,
}

/// Containers named in one warning.
const NAMED: usize = 3;

impl ContainerWarnings {
    /// Notes that `container` has problem `key`; `message` (with the values) is written only
    /// for the first container that has it.
    fn add(&mut self, container: &str, key: String, message: impl FnOnce() -> String) {
        match self.problems.iter_mut().find(|p| p.key == key) {
            Some(problem) => {
                problem.count += 1;
                if problem.names.len() < NAMED {
                    problem.names.push(container.to_string());
                }
            }
            None => self.problems.push(Problem {
                key,
                first: message(),
                names: vec![container.to_string()],
                count: 1,
            }),
        }
    }

    /// The warnings, one per problem in the order first seen: `container "a": limits.memory
    /// 1Gi is above the LimitRange max 512Mi (the same for 4 more containers: "b", "c", …)`.
    pub fn into_messages(self) -> impl Iterator<Item = String> {
        self.problems.into_iter().map(|p| {
            let mut names = p.names.iter();
            let first = names.next().map_or("", String::as_str);
            let mut text = format!("container {first:?}: {}", p.first);
            if p.count > 1 {
                let others: Vec<String> = names.map(|n| format!("{n:?}")).collect();
                let more = if p.count > p.names.len() { ", …" } else { "" };
                text += &format!(
                    " (the same for {} more containers: {}{more})",
                    p.count - 1,
                    others.join(", ")
                );
            }
            text
        })
    }
}

/// A value for one resource: what the container ends up with, and whether it was injected.
#[derive(Clone, Copy)]
struct Value {
    amount: Amount,
    injected: bool,
}

/// Fills the container's missing requests and limits (all of them under `enforce`), never
/// injecting a value that breaks `bounds` or the policy's ratio; warns about the user's values
/// that do.
pub fn fill(
    container: &mut Container,
    policy: &EffectiveResources,
    bounds: &Bounds,
    warnings: &mut ContainerWarnings,
) {
    let names: BTreeSet<&String> = policy
        .requests
        .keys()
        .chain(policy.limits.keys())
        .chain(bounds.max.keys())
        .chain(bounds.ratio.keys())
        .collect();
    let container_name = container.name.clone();
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    for name in names {
        // `problem` names the kind of warning without the values, so that containers with
        // the same problem share one warning.
        let warn = |warnings: &mut ContainerWarnings,
                    problem: &str,
                    kind: &str,
                    what: &dyn Fn() -> String| {
            warnings.add(&container_name, format!("{problem} {kind}.{name}"), what);
        };
        let user = |map: &Option<BTreeMap<String, Quantity>>,
                    kind: &str,
                    warnings: &mut ContainerWarnings| {
            let Some(text) = map.as_ref().and_then(|m| m.get(name)) else {
                return Ok(None);
            };
            Amount::parse(&text.0).map(Some).map_err(|err| {
                warn(warnings, "unparsable", kind, &|| {
                    format!("{kind}.{name}: {err}; left alone")
                });
            })
        };
        // Under `enforce` the policy's values replace the user's.
        let Ok(user_request) = user(&resources.requests, "requests", warnings) else {
            continue;
        };
        let user_request =
            user_request.filter(|_| !(policy.enforce && policy.requests.contains_key(name)));
        let Ok(user_limit) = user(&resources.limits, "limits", warnings) else {
            continue;
        };
        let user_limit =
            user_limit.filter(|_| !(policy.enforce && policy.limits.contains_key(name)));
        let ratio = min_option(
            policy.max_limit_request_ratio.get(name).map(|q| q.amount),
            bounds.ratio.get(name).copied(),
        );
        let low = bounds.min.get(name).map(|(a, _)| *a);
        let high = bounds.max.get(name).map(|(a, _)| *a);

        let request = match (user_request, policy.requests.get(name)) {
            (Some(amount), _) => Some(Value {
                amount,
                injected: false,
            }),
            (None, Some(wanted)) => {
                let mut r = wanted.amount;
                if let Some(limit) = user_limit {
                    r = r.min(limit);
                    if let Some(floor) = ratio.and_then(|ratio| limit.divided_by(ratio)) {
                        r = r.max(floor);
                    }
                }
                r = clamp(r, low, high);
                if user_limit.is_some_and(|limit| r > limit) {
                    warn(warnings, "no fit", "requests", &|| {
                        format!(
                            "no requests.{name} fits both the limit and the LimitRange; left unset"
                        )
                    });
                    None
                } else {
                    set(&mut resources.requests, name, r, wanted);
                    Some(Value {
                        amount: r,
                        injected: true,
                    })
                }
            }
            (None, None) => None,
        };

        let cap = |l: Amount| match (request, ratio) {
            (Some(r), Some(ratio)) => r.amount.times(ratio).map_or(l, |cap| l.min(cap)),
            _ => l,
        };
        let limit = match (user_limit, policy.limits.get(name)) {
            (Some(amount), _) => Some(Value {
                amount,
                injected: false,
            }),
            (None, Some(wanted)) => {
                let floor = request.map(|r| r.amount);
                let l = clamp(
                    cap(floor.map_or(wanted.amount, |r| wanted.amount.max(r))),
                    low,
                    high,
                );
                if floor.is_some_and(|r| l < r) || low.is_some_and(|lo| l < lo) {
                    warn(warnings, "no fit", "limits", &|| {
                        format!(
                            "no limits.{name} fits both the request and the LimitRange; left unset"
                        )
                    });
                    None
                } else {
                    set(&mut resources.limits, name, l, wanted);
                    Some(Value {
                        amount: l,
                        injected: true,
                    })
                }
            }
            // A LimitRange with a max or a ratio but no default limit rejects a Pod without a
            // limit: give it the largest limit the LimitRange allows.
            (None, None)
                if !bounds.defaulted_limits.contains(name)
                    && (high.is_some() || bounds.ratio.contains_key(name)) =>
            {
                let candidate = match (high, request) {
                    (Some(h), _) => Some(cap(h)),
                    (None, Some(r)) => bounds
                        .ratio
                        .get(name)
                        .and_then(|ratio| r.amount.times(*ratio)),
                    (None, None) => None,
                };
                let format = bounds
                    .max
                    .get(name)
                    .map(|(_, f)| *f)
                    .unwrap_or(Format::DecimalSi);
                match candidate {
                    Some(l) if request.is_none_or(|r| l >= r.amount) => {
                        let text = l.to_quantity(format);
                        resources
                            .limits
                            .get_or_insert_with(BTreeMap::new)
                            .insert(name.clone(), Quantity(text));
                        Some(Value {
                            amount: l,
                            injected: true,
                        })
                    }
                    _ => None,
                }
            }
            (None, None) => None,
        };

        // The user's own values: admitted as written, with a warning when they break a rule.
        if let (Some(r), Some(l)) = (request, limit)
            && !(r.injected && l.injected)
        {
            if l.amount < r.amount {
                warn(warnings, "below request", "limits", &|| {
                    format!(
                        "limits.{name} {} is below requests.{name} {}: the Pod will be rejected",
                        l.amount, r.amount
                    )
                });
            } else if let Some(ratio) = ratio
                && r.amount > Amount::ZERO
                && r.amount.times(ratio).is_some_and(|cap| l.amount > cap)
            {
                warn(warnings, "ratio", "limits", &|| {
                    format!(
                        "limits.{name} / requests.{name} = {} / {} exceeds the maximum ratio {ratio}",
                        l.amount, r.amount
                    )
                });
            }
        }
        for (kind, value) in [("requests", request), ("limits", limit)] {
            let Some(value) = value.filter(|v| !v.injected) else {
                continue;
            };
            if let Some(h) = high.filter(|h| value.amount > *h) {
                warn(warnings, "above max", kind, &|| {
                    format!(
                        "{kind}.{name} {} is above the LimitRange max {h}",
                        value.amount
                    )
                });
            }
            if let Some(l) = low.filter(|l| value.amount < *l) {
                warn(warnings, "below min", kind, &|| {
                    format!(
                        "{kind}.{name} {} is below the LimitRange min {l}",
                        value.amount
                    )
                });
            }
        }
    }
    // No empty maps left behind: `resources: {}` would be a change of its own.
    if resources.requests.as_ref().is_some_and(BTreeMap::is_empty) {
        resources.requests = None;
    }
    if resources.limits.as_ref().is_some_and(BTreeMap::is_empty) {
        resources.limits = None;
    }
}

/// Writes `amount` as the policy wrote it when it is the policy's own value, else in the
/// policy value's format.
fn set(
    map: &mut Option<BTreeMap<String, Quantity>>,
    name: &str,
    amount: Amount,
    wanted: &PolicyQuantity,
) {
    let text = if amount == wanted.amount {
        wanted.text.clone()
    } else {
        amount.to_quantity(wanted.format)
    };
    map.get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), Quantity(text));
}

fn clamp(value: Amount, low: Option<Amount>, high: Option<Amount>) -> Amount {
    let value = low.map_or(value, |low| value.max(low));
    high.map_or(value, |high| value.min(high))
}

fn min_option(a: Option<Amount>, b: Option<Amount>) -> Option<Amount> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
