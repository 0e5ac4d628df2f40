//! `[upstream.budget]`: how fast the proxy may call the upstream per upstream credential, as written and as validated.

use std::time::Duration;

use serde::Deserialize;

use super::durations::duration;
use super::ConfigError;

/// `[upstream.budget]` as written; every key has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBudget {
    pub rate: f64,
    pub burst: Option<u64>,
    pub max_wait: String,
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget {
            rate: 0.0,
            burst: None,
            max_wait: "2s".into(),
        }
    }
}

/// The validated `[upstream.budget]`: reloadable, copied into every budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Upstream calls per second per upstream credential; zero: no budget.
    pub rate: f64,
    /// Calls that may go at once after a quiet spell; at least 1.
    pub burst: u32,
    /// How long a call may wait for its turn; zero: never wait.
    pub max_wait: Duration,
}

impl BudgetSettings {
    /// The budget is off (`rate = 0`): calls go as they come.
    pub fn is_off(&self) -> bool {
        self.rate == 0.0
    }
}

impl Default for BudgetSettings {
    fn default() -> Self {
        settings(RawBudget::default()).expect("the defaults are valid")
    }
}

/// Below this a rate is a typo (one call per 1000 s), and its interval
/// would push the bucket's clock arithmetic towards overflow.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: u64 = 1_000_000;
/// A call held longer than this is a stuck client, not a wait.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub(super) fn settings(raw: RawBudget) -> Result<BudgetSettings, ConfigError> {
    let rate = rate(raw.rate)?;
    let burst = match raw.burst {
        Some(burst) => burst_of(burst)?,
        None => default_burst(rate),
    };
    let max_wait = duration("upstream.budget.max_wait", &raw.max_wait)?;
    if max_wait > MAX_WAIT {
        return Err(ConfigError::invalid(
            "upstream.budget.max_wait",
            "must be at most 5m",
        ));
    }
    Ok(BudgetSettings {
        rate,
        burst,
        max_wait,
    })
}

fn rate(rate: f64) -> Result<f64, ConfigError> {
    if rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&rate) {
        return Ok(rate);
    }
    Err(ConfigError::invalid(
        "upstream.budget.rate",
        format!("must be 0 (off) or between {MIN_RATE} and {MAX_RATE} calls per second"),
    ))
}

fn burst_of(burst: u64) -> Result<u32, ConfigError> {
    if burst == 0 || burst > MAX_BURST {
        return Err(ConfigError::invalid(
            "upstream.budget.burst",
            format!("must be between 1 and {MAX_BURST}"),
        ));
    }
    Ok(u32::try_from(burst).unwrap_or(u32::MAX))
}

/// Unset: two seconds' worth of calls, at least 1 (`rate = 20` gives 40).
fn default_burst(rate: f64) -> u32 {
    // `rate` is at most MAX_RATE here, so the product fits.
    ((rate * 2.0).ceil() as u32).clamp(1, MAX_BURST as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(result: Result<BudgetSettings, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    fn raw(rate: f64, burst: Option<u64>, max_wait: &str) -> RawBudget {
        RawBudget {
            rate,
            burst,
            max_wait: max_wait.into(),
        }
    }

    #[test]
    fn the_defaults_turn_the_budget_off() {
        let settings = BudgetSettings::default();
        assert!(settings.is_off());
        assert_eq!(settings.burst, 1);
        assert_eq!(settings.max_wait, Duration::from_secs(2));
    }

    #[test]
    fn an_unset_burst_is_two_seconds_of_calls_and_at_least_one() {
        assert_eq!(settings(raw(20.0, None, "2s")).unwrap().burst, 40);
        assert_eq!(settings(raw(0.25, None, "2s")).unwrap().burst, 1);
        assert_eq!(settings(raw(1.5, None, "2s")).unwrap().burst, 3);
        assert_eq!(settings(raw(20.0, Some(5), "2s")).unwrap().burst, 5);
    }

    #[test]
    fn a_zero_wait_is_allowed() {
        let settings = settings(raw(5.0, None, "0s")).unwrap();
        assert_eq!(settings.max_wait, Duration::ZERO);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (raw(-1.0, None, "2s"), "upstream.budget.rate"),
            (raw(f64::NAN, None, "2s"), "upstream.budget.rate"),
            (raw(f64::INFINITY, None, "2s"), "upstream.budget.rate"),
            (raw(0.0001, None, "2s"), "upstream.budget.rate"),
            (raw(2e6, None, "2s"), "upstream.budget.rate"),
            (raw(5.0, Some(0), "2s"), "upstream.budget.burst"),
            (raw(5.0, Some(2_000_000), "2s"), "upstream.budget.burst"),
            (raw(5.0, None, "soon"), "upstream.budget.max_wait"),
            (raw(5.0, None, "10m"), "upstream.budget.max_wait"),
        ];
        for (raw, key) in cases {
            let written = format!("{raw:?}");
            assert_eq!(key_of(settings(raw)), key, "{written}");
        }
    }

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<BudgetSettings, ConfigError> {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::super::Settings::load_with_env(file.path(), Some(env))
            .map(|settings| settings.upstream.budget)
    }

    #[test]
    fn the_file_section_is_read_under_upstream() {
        let toml = "[upstream.budget]\nrate = 20\nburst = 5\nmax_wait = \"500ms\"\n";
        let settings = load(toml, &[]).unwrap();
        assert_eq!(settings.rate, 20.0);
        assert_eq!(settings.burst, 5);
        assert_eq!(settings.max_wait, Duration::from_millis(500));
        let fraction = load("[upstream.budget]\nrate = 0.5\n", &[]).unwrap();
        assert_eq!((fraction.rate, fraction.burst), (0.5, 1));
        assert!(load("", &[]).unwrap().is_off());
    }

    #[test]
    fn the_environment_sets_the_budget() {
        let env = [
            ("AYRA_CACHE__UPSTREAM__BUDGET__RATE", "12.5"),
            ("AYRA_CACHE__UPSTREAM__BUDGET__BURST", "3"),
            ("AYRA_CACHE__UPSTREAM__BUDGET__MAX_WAIT", "1s"),
        ];
        let settings = load("", &env).unwrap();
        assert_eq!(settings.rate, 12.5);
        assert_eq!(settings.burst, 3);
        assert_eq!(settings.max_wait, Duration::from_secs(1));
    }

    #[test]
    fn unknown_and_bad_keys_are_named_through_the_loader() {
        let key = |result: Result<BudgetSettings, ConfigError>| match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        };
        assert_eq!(
            key(load("[upstream.budget]\nrat = 1\n", &[])),
            "upstream.budget.rat"
        );
        assert_eq!(
            key(load("", &[("AYRA_CACHE__UPSTREAM__BUDGET__BURTS", "1")])),
            "upstream.budget.burts"
        );
        assert_eq!(
            key(load("[upstream.budget]\nburst = -1\n", &[])),
            "upstream.budget.burst"
        );
        assert_eq!(
            key(load("[upstream.budget]\nrate = \"fast\"\n", &[])),
            "upstream.budget.rate"
        );
        assert_eq!(
            key(load("[upstream.budget]\nburst = 0\n", &[])),
            "upstream.budget.burst"
        );
    }
}
