//! From the metrics' recommendation to the replica count, as Kubernetes' HPA
//! controller does it with `behavior` (horizontal.go, normalizeDesiredReplicas
//! WithBehaviors): stabilization — a scale-up takes the lowest recommendation
//! of its window, a scale-down the highest of its (300 s by default), so one
//! spike or dip changes nothing — then rate limits — the policies bound how
//! many pods may be added or removed per period, counting the changes already
//! made in it — then `minReplicas`/`maxReplicas`. Pure, over an in-memory
//! history, as Kubernetes keeps it (a restarted controller starts afresh).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingPolicy, HPAScalingRules};

/// How much history is kept at most (the longest window or period is an hour).
const KEEP: Duration = Duration::from_secs(3600);

/// The recommendations and rescales of one autoscaler.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: VecDeque<(Instant, i32)>,
    /// Replicas added (positive) or removed (negative), with when.
    scales: VecDeque<(Instant, i32)>,
}

impl History {
    fn trim(&mut self, now: Instant) {
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > KEEP)
        {
            self.recommendations.pop_front();
        }
        while self
            .scales
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > KEEP)
        {
            self.scales.pop_front();
        }
    }

    /// Records a rescale by `change` pods.
    pub fn scaled(&mut self, now: Instant, change: i32) {
        self.scales.push_back((now, change));
    }

    /// Pods added and removed by the rescales within `period`.
    fn changed_within(&self, now: Instant, period: Duration) -> (i64, i64) {
        self.scales
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= period)
            .fold((0, 0), |(added, removed), (_, c)| {
                if *c > 0 {
                    (added + i64::from(*c), removed)
                } else {
                    (added, removed + i64::from(c.unsigned_abs()))
                }
            })
    }

    /// The replica count at the start of `period`, as Kubernetes computes it
    /// for a policy: the current one less what was added and plus what was
    /// removed within it.
    fn at_start_of(&self, now: Instant, period: Duration, current: i32) -> i64 {
        let (added, removed) = self.changed_within(now, period);
        (i64::from(current) - added + removed).max(0)
    }
}

/// Why the count is what it is, for the `ScalingLimited` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Within `minReplicas`..`maxReplicas` and the policies.
    None,
    TooMany,
    TooFew,
    ScaleUpLimit,
    ScaleDownLimit,
}

impl Limit {
    pub fn reason(self) -> &'static str {
        match self {
            Limit::None => "DesiredWithinRange",
            Limit::TooMany => "TooManyReplicas",
            Limit::TooFew => "TooFewReplicas",
            Limit::ScaleUpLimit => "ScaleUpLimit",
            Limit::ScaleDownLimit => "ScaleDownLimit",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Limit::None => "the desired count is within the acceptable range",
            Limit::TooMany => "the desired replica count is more than the maximum replica count",
            Limit::TooFew => "the desired replica count is less than the minimum replica count",
            Limit::ScaleUpLimit => {
                "the desired replica count is increasing faster than the maximum scale rate"
            }
            Limit::ScaleDownLimit => {
                "the desired replica count is decreasing faster than the maximum scale rate"
            }
        }
    }
}

/// The rules of an autoscaler without `behavior` at all, as Kubernetes'
/// normalizeDesiredReplicas: no policies (scale up at most to double or 4,
/// scale down without a rate limit) and the 300 s scale-down window.
pub fn legacy_rules(up: bool) -> HPAScalingRules {
    HPAScalingRules {
        stabilization_window_seconds: Some(if up { 0 } else { 300 }),
        select_policy: Some("Max".into()),
        policies: None,
        tolerance: None,
    }
}

/// Kubernetes' defaults for a direction without rules in a `behavior`.
pub fn default_rules(up: bool) -> HPAScalingRules {
    let policy = |type_: &str, value: i32| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: 15,
    };
    if up {
        HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Pods", 4), policy("Percent", 100)]),
            tolerance: None,
        }
    } else {
        HPAScalingRules {
            stabilization_window_seconds: Some(300),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100)]),
            tolerance: None,
        }
    }
}

fn secs(s: Option<i32>) -> Duration {
    Duration::from_secs(u64::try_from(s.unwrap_or(0).max(0)).unwrap_or(0))
}

/// The most replicas the scale-up rules allow now.
fn up_limit(current: i32, history: &History, rules: &HPAScalingRules, now: Instant) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let policies = rules.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        // An autoscaler without `behavior`: Kubernetes' calculateScaleUpLimit,
        // at most double and at least 4.
        return current.saturating_mul(2).max(4);
    }
    let mut result: Option<i64> = None;
    for p in policies {
        let start = history.at_start_of(now, secs(Some(p.period_seconds)), current);
        let proposed = if p.type_ == "Pods" {
            start + i64::from(p.value)
        } else {
            (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
        };
        result = Some(match (result, select) {
            (None, _) => proposed,
            (Some(r), "Min") => r.min(proposed),
            (Some(r), _) => r.max(proposed),
        });
    }
    i32::try_from(result.unwrap_or(i64::from(current))).unwrap_or(i32::MAX)
}

/// The fewest replicas the scale-down rules allow now.
fn down_limit(current: i32, history: &History, rules: &HPAScalingRules, now: Instant) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let policies = rules.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        // An autoscaler without `behavior`: no rate limit on scaling down.
        return 0;
    }
    let mut result: Option<i64> = None;
    for p in policies {
        let start = history.at_start_of(now, secs(Some(p.period_seconds)), current);
        let proposed = if p.type_ == "Pods" {
            start - i64::from(p.value)
        } else {
            (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64
        };
        // Max allows the most change: the lowest bound; Min the least.
        result = Some(match (result, select) {
            (None, _) => proposed,
            (Some(r), "Min") => r.max(proposed),
            (Some(r), _) => r.min(proposed),
        });
    }
    i32::try_from(result.unwrap_or(i64::from(current)).max(0)).unwrap_or(0)
}

/// The replica count from the metrics' `recommendation`, given the current
/// count, the bounds and the rules; records the recommendation.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    history: &mut History,
    now: Instant,
    current: i32,
    recommendation: i32,
    min: i32,
    max: i32,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
) -> (i32, Limit) {
    history.trim(now);
    // As Kubernetes' recordInitialRecommendation: a new autoscaler (or one a
    // restarted controller has no history of) starts as if it had recommended
    // the current count, so its first readings cannot scale down at once.
    if history.recommendations.is_empty() {
        history.recommendations.push_back((now, current));
    }
    // Stabilization: the lowest recommendation of the up window, the highest
    // of the down window, this one included.
    let up_window = secs(up.stabilization_window_seconds);
    let down_window = secs(down.stabilization_window_seconds);
    let mut up_rec = recommendation;
    let mut down_rec = recommendation;
    for (t, r) in &history.recommendations {
        let age = now.duration_since(*t);
        if age < up_window {
            up_rec = up_rec.min(*r);
        }
        if age < down_window {
            down_rec = down_rec.max(*r);
        }
    }
    history.recommendations.push_back((now, recommendation));
    let mut desired = current;
    if desired < up_rec {
        desired = up_rec;
    }
    if desired > down_rec {
        desired = down_rec;
    }
    // Rates and bounds.
    let mut limit = Limit::None;
    if desired > current {
        let allowed = up_limit(current, history, up, now).max(current);
        let (cap, why) = if max > allowed {
            (allowed, Limit::ScaleUpLimit)
        } else {
            (max, Limit::TooMany)
        };
        if desired > cap {
            desired = cap;
            limit = why;
        }
    } else if desired < current {
        let allowed = down_limit(current, history, down, now).min(current);
        let (floor, why) = if min < allowed {
            (allowed, Limit::ScaleDownLimit)
        } else {
            (min, Limit::TooFew)
        };
        if desired < floor {
            desired = floor;
            limit = why;
        }
    }
    if desired > max {
        (desired, limit) = (max, Limit::TooMany);
    }
    if desired < min {
        (desired, limit) = (min, Limit::TooFew);
    }
    (desired, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(window: i32, policies: &[(&str, i32, i32)], select: &str) -> HPAScalingRules {
        HPAScalingRules {
            stabilization_window_seconds: Some(window),
            select_policy: Some(select.into()),
            policies: Some(
                policies
                    .iter()
                    .map(|(t, v, p)| HPAScalingPolicy {
                        type_: (*t).into(),
                        value: *v,
                        period_seconds: *p,
                    })
                    .collect(),
            ),
            tolerance: None,
        }
    }

    #[test]
    fn the_default_scale_up_is_at_most_double_or_four_more_per_period() {
        let mut h = History::default();
        let now = Instant::now();
        let (up, down) = (default_rules(true), default_rules(false));
        // From 1: +4 beats doubling.
        assert_eq!(
            decide(&mut h, now, 1, 20, 1, 100, &up, &down),
            (5, Limit::ScaleUpLimit)
        );
        h.scaled(now, 4);
        // Within the same 15 s, from 5 (started the period at 1): nothing more.
        assert_eq!(
            decide(
                &mut h,
                now + Duration::from_secs(5),
                5,
                20,
                1,
                100,
                &up,
                &down
            )
            .0,
            5
        );
        // A new period from 5: doubling (10) beats +4 (9).
        assert_eq!(
            decide(
                &mut h,
                now + Duration::from_secs(20),
                5,
                20,
                1,
                100,
                &up,
                &down
            ),
            (10, Limit::ScaleUpLimit)
        );
    }

    #[test]
    fn a_scale_down_waits_out_its_window_at_the_highest_recommendation() {
        let mut h = History::default();
        let t0 = Instant::now();
        let (up, down) = (
            default_rules(true),
            rules(60, &[("Percent", 100, 15)], "Max"),
        );
        assert_eq!(decide(&mut h, t0, 5, 5, 1, 10, &up, &down).0, 5);
        // The load is gone: recommendations of 1, but 5 was seen within 60 s.
        assert_eq!(
            decide(
                &mut h,
                t0 + Duration::from_secs(30),
                5,
                1,
                1,
                10,
                &up,
                &down
            )
            .0,
            5
        );
        assert_eq!(
            decide(
                &mut h,
                t0 + Duration::from_secs(59),
                5,
                1,
                1,
                10,
                &up,
                &down
            )
            .0,
            5
        );
        // Past the window, only 1s remain.
        assert_eq!(
            decide(
                &mut h,
                t0 + Duration::from_secs(61),
                5,
                1,
                1,
                10,
                &up,
                &down
            )
            .0,
            1
        );
    }

    #[test]
    fn a_new_autoscaler_starts_from_the_current_count_and_without_behavior_at_most_doubles() {
        let t0 = Instant::now();
        let (up, down) = (legacy_rules(true), legacy_rules(false));
        let mut h = History::default();
        // Its first reading is low: the 300 s window keeps the current 5.
        assert_eq!(decide(&mut h, t0, 5, 1, 1, 10, &up, &down).0, 5);
        assert_eq!(
            decide(
                &mut h,
                t0 + Duration::from_secs(301),
                5,
                1,
                1,
                10,
                &up,
                &down
            ),
            (1, Limit::None)
        );
        // From 1: at least 4; from 3: double.
        let mut h = History::default();
        assert_eq!(
            decide(&mut h, t0, 1, 20, 1, 100, &up, &down),
            (4, Limit::ScaleUpLimit)
        );
        let mut h = History::default();
        assert_eq!(
            decide(&mut h, t0, 3, 20, 1, 100, &up, &down),
            (6, Limit::ScaleUpLimit)
        );
    }

    #[test]
    fn a_rate_limit_counts_both_directions_of_its_period() {
        // Up by 4 then down by 2 within 60 s: the period started at 3.
        let t0 = Instant::now();
        let up = rules(0, &[("Pods", 4, 60)], "Max");
        let down = rules(0, &[("Pods", 4, 60)], "Max");
        let mut h = History::default();
        h.scaled(t0, 4);
        h.scaled(t0 + Duration::from_secs(1), -2);
        let now = t0 + Duration::from_secs(2);
        // current 5 = 3 + 4 - 2: up to 3 + 4 = 7 at most.
        assert_eq!(
            decide(&mut h, now, 5, 20, 1, 100, &up, &down),
            (7, Limit::ScaleUpLimit)
        );
    }

    #[test]
    fn bounds_and_policies_name_the_limit() {
        // A fresh history each time: with windows of 0 a recommendation made at
        // the same instant still counts.
        let d = |current, rec, min, max, up: &HPAScalingRules, down: &HPAScalingRules| {
            decide(
                &mut History::default(),
                Instant::now(),
                current,
                rec,
                min,
                max,
                up,
                down,
            )
        };
        let up = rules(0, &[("Pods", 2, 60)], "Max");
        let down = rules(0, &[("Pods", 1, 60)], "Max");
        assert_eq!(d(4, 10, 1, 5, &up, &down), (5, Limit::TooMany));
        assert_eq!(d(2, 10, 1, 8, &up, &down), (4, Limit::ScaleUpLimit));
        assert_eq!(d(4, 1, 1, 8, &up, &down), (3, Limit::ScaleDownLimit));
        assert_eq!(d(2, 0, 1, 8, &up, &down), (1, Limit::TooFew));
        let disabled = rules(0, &[("Pods", 1, 60)], "Disabled");
        assert_eq!(d(4, 1, 1, 8, &up, &disabled).0, 4);
    }
}
