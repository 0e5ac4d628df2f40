//! The settings that change while the proxy runs (SIGHUP), held as one value swapped atomically.
//!
//! A request reads them once, at its start, so it sees one consistent set
//! from beginning to end even when a reload lands halfway through.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::cache::CacheRules;
use crate::config::Settings;

/// The live part of the settings.
pub struct Live {
    pub auth: Authenticator,
    /// SHA-256 of the admin token; none disables `/admin/`.
    pub admin_token: Option<[u8; 32]>,
    /// The whole upstream exchange.
    pub upstream_timeout: Duration,
    pub cache: CacheRules,
}

impl Live {
    /// The live part of `settings`.
    pub fn from_settings(settings: &Settings) -> Live {
        Live {
            auth: Authenticator::from_settings(settings),
            admin_token: settings.admin.token_sha256,
            upstream_timeout: settings.upstream.timeout,
            cache: CacheRules::from_settings(&settings.cache),
        }
    }
}

/// The live settings of the running proxy.
pub type LiveSettings = ArcSwap<Live>;

/// A fresh holder for `settings`' live part.
pub fn hold(settings: &Settings) -> LiveSettings {
    ArcSwap::from(Arc::new(Live::from_settings(settings)))
}
