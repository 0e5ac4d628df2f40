//! `spawn_app`: the proxy, in this process, on port 0, from a real config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ayra_cache::config::Settings;
use ayra_cache::App;
use tokio::sync::oneshot;

use crate::standin::StandIn;

/// A config file written for one test: the test defaults, then the test's own keys.
#[derive(Clone)]
pub struct ConfigFile {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl ConfigFile {
    /// Defaults for a proxy in front of `upstream`: port 0, short timeouts, quiet logs.
    pub fn for_upstream(upstream: &str) -> ConfigFile {
        let mut config = ConfigFile {
            sections: BTreeMap::new(),
        };
        config
            .set("server.listen", "\"127.0.0.1:0\"")
            .set("upstream.base_url", &format!("{upstream:?}"))
            .set("upstream.timeout", "\"2s\"")
            .set("log.level", "\"warn\"");
        config
    }

    /// Sets `section.key` to a TOML literal (strings quoted by the caller).
    pub fn set(&mut self, dotted_key: &str, literal: &str) -> &mut Self {
        let (section, key) = dotted_key.split_once('.').expect("section.key");
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), literal.to_owned());
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (section, keys) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, literal) in keys {
                text.push_str(&format!("{key} = {literal}\n"));
            }
        }
        text
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write(&self, dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("ayra-cache.toml");
        std::fs::write(&path, self.render()).expect("write config");
        path
    }
}

/// A running proxy; stops when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Applies a new config to the running proxy, as SIGHUP does.
    pub reloader: ayra_cache::reload::Reloader,
    /// The admin listener, when `server.admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://ADMIN_ADDR{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin_addr.expect("an admin listener"),
            path
        )
    }

    /// Loads `config` as the binary would on SIGHUP and applies it.
    pub fn reload(&self, config: &ConfigFile) -> ayra_cache::reload::ReloadReport {
        let path = config.write(&self._dir);
        let settings =
            Settings::load_with_env(&path, Some(Default::default())).expect("valid config");
        self.reloader.apply(&settings)
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request reaches the proxy")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the proxy with `config`, in front of whatever upstream it names.
pub async fn spawn_with(config: &ConfigFile) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config.write(&dir);
    let settings = Settings::load_with_env(&path, Some(Default::default())).expect("valid config");
    let app = App::build(settings).await.expect("bind");
    let addr = app.local_addr().expect("local addr");
    let admin_addr = app.admin_addr();
    let reloader = app.reloader(None);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        reloader,
        admin_addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
        _dir: dir,
    }
}

/// Starts the proxy in front of `standin`, with `keys` set on top of the test defaults.
pub async fn spawn_app(standin: &StandIn, keys: &[(&str, &str)]) -> TestApp {
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    for (key, literal) in keys {
        config.set(key, literal);
    }
    spawn_with(&config).await
}

/// A fresh stand-in and a proxy in front of it with `keys` set.
pub async fn spawn_pair(keys: &[(&str, &str)]) -> (StandIn, TestApp) {
    let standin = StandIn::spawn().await;
    let app = spawn_app(&standin, keys).await;
    (standin, app)
}
