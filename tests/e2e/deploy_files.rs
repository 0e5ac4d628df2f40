//! The deployment files: every YAML and TOML file parses, every ayra-cache
//! config passes the real binary's `--check-config`, the systemd unit passes
//! `systemd-analyze verify`, the Prometheus files pass promtool, and the
//! files agree with each other (ports, probes, grace periods, memory, names).
//!
//! `systemd-analyze`, `promtool` and `kubectl` must be installed (`.ci/run`
//! installs them from Debian): a check whose tool is missing fails, it is
//! never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;
use sha2::{Digest, Sha256};

const BINARY: &str = env!("CARGO_BIN_EXE_ayra-cache");
/// Where every image, unit and manifest puts the config.
const CONFIG_PATH: &str = "/etc/ayra-cache/ayra-cache.toml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if suffixes.iter().any(|suffix| name.ends_with(suffix)) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

/// Every document of a YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .collect()
}

fn yaml(relative: &str) -> Value {
    let mut documents = yaml_documents(&root().join(relative));
    assert_eq!(documents.len(), 1, "{relative}: one document expected");
    documents.remove(0)
}

/// The value at `path` (map keys, or indexes into sequences), or a panic naming it.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut here = value;
    for (depth, step) in path.iter().enumerate() {
        let next = match step.parse::<usize>() {
            Ok(index) => here.as_sequence().and_then(|items| items.get(index)),
            Err(_) => here.get(*step),
        };
        here = next.unwrap_or_else(|| panic!("missing {}", path[..=depth].join(".")));
    }
    here
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn number(value: &Value, path: &[&str]) -> u64 {
    at(value, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number", path.join(".")))
}

fn items<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

fn toml_table(text: &str, what: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid TOML: {e}"))
}

fn toml_str<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a str {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{section}.{key} is not set"))
}

fn port_of(listen: &str) -> u16 {
    let addr: std::net::SocketAddr = listen.parse().unwrap_or_else(|e| panic!("{listen}: {e}"));
    addr.port()
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A Kubernetes quantity such as "512Mi" or "1Gi", in bytes.
fn quantity_bytes(text: &str) -> u64 {
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    for (suffix, factor) in units {
        if let Some(count) = text.strip_suffix(suffix) {
            return count.parse::<u64>().expect("quantity") * factor;
        }
    }
    text.parse()
        .unwrap_or_else(|e| panic!("quantity {text}: {e}"))
}

/// The Kubernetes object of `kind` among deploy/kubernetes/*.yaml.
fn k8s(kind: &str) -> Value {
    files_under(&root().join("deploy/kubernetes"), &[".yaml", ".yml"])
        .iter()
        .flat_map(|path| yaml_documents(path))
        .find(|object| object.get("kind").and_then(Value::as_str) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

/// The config file the ConfigMap holds.
fn configmap_toml() -> String {
    text(&k8s("ConfigMap"), &["data", "ayra-cache.toml"]).to_owned()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `ayra-cache --check-config` on `path`, with only `env` of the
/// AYRA_CACHE__ variables set.
fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command.arg("--check-config").arg("--config").arg(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AYRA_CACHE__") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().copied())
        .output()
        .expect("run ayra-cache")
}

fn check_config_text(text: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ayra-cache.toml");
    std::fs::write(&path, text).unwrap();
    check_config(&path, env)
}

/// The path of the executable named `name` on PATH; fails the test when
/// there is none (`package` is the Debian package `.ci/run` installs it from).
fn tool(name: &str, package: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: apt-get install {package} (as .ci/run does)")
        })
}

fn show(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------- parsing

#[test]
fn every_yaml_file_in_deploy_parses() {
    let files = files_under(&root().join("deploy"), &[".yaml", ".yml"]);
    assert!(files.len() >= 8, "expected the manifests, found {files:?}");
    for path in &files {
        let documents = yaml_documents(path);
        assert!(!documents.is_empty(), "{} is empty", path.display());
        if path.starts_with(root().join("deploy/kubernetes")) {
            for object in &documents {
                for field in ["apiVersion", "kind"] {
                    assert!(
                        object.get(field).and_then(Value::as_str).is_some(),
                        "{}: no {field}",
                        path.display()
                    );
                }
                if text(object, &["kind"]) != "Kustomization" {
                    text(object, &["metadata", "name"]);
                }
            }
        }
    }
}

#[test]
fn every_toml_file_in_deploy_and_config_parses() {
    let mut files = files_under(&root().join("deploy"), &[".toml"]);
    files.extend(files_under(&root().join("config"), &[".toml"]));
    assert!(files.len() >= 3, "{files:?}");
    for path in &files {
        toml_table(
            &std::fs::read_to_string(path).unwrap(),
            &path.display().to_string(),
        );
    }
    toml_table(&configmap_toml(), "the ConfigMap's ayra-cache.toml");
}

// ------------------------------------------------------ the real binary

#[test]
fn every_shipped_config_passes_check_config() {
    let mut files = files_under(&root().join("config"), &[".toml"]);
    files.extend(files_under(&root().join("deploy"), &[".toml"]));
    for path in &files {
        let output = check_config(path, &[]);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            show(&output)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("is valid"));
    }
    let output = check_config_text(&configmap_toml(), &[]);
    assert!(
        output.status.success(),
        "the ConfigMap's ayra-cache.toml: {}",
        show(&output)
    );
}

#[test]
fn check_config_refuses_a_broken_configmap() {
    // The check above can fail: a misspelt key in the same file is refused.
    let broken = configmap_toml().replace("max_bytes =", "max_byte =");
    let output = check_config_text(&broken, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_byte"));
}

#[test]
fn the_secret_names_keys_the_proxy_reads_and_its_placeholders_never_start_it() {
    let secret = k8s("Secret");
    let data = at(&secret, &["stringData"])
        .as_mapping()
        .expect("stringData");
    let names: Vec<&str> = data.keys().map(|k| k.as_str().unwrap()).collect();
    assert!(
        names.contains(&"AYRA_CACHE__UPSTREAM__API_KEY"),
        "{names:?}"
    );
    let config = configmap_toml();

    // As shipped: refused, so a placeholder can never reach the upstream.
    let placeholders: Vec<(&str, &str)> = data
        .iter()
        .map(|(k, v)| (k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    for (name, value) in &placeholders {
        assert!(
            value.contains("REPLACE"),
            "{name} must hold an obvious placeholder"
        );
    }
    let output = check_config_text(&config, &placeholders);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));

    // Filled in (with the client token digests the ConfigMap must then
    // list): accepted, so every name in the Secret is one the proxy reads.
    let admin_digest = sha256_hex("admin-token-for-this-test");
    let filled: Vec<(&str, &str)> = names
        .iter()
        .map(|name| {
            let value = match *name {
                "AYRA_CACHE__UPSTREAM__API_KEY" => "test-key-not-real",
                "AYRA_CACHE__ADMIN__TOKEN_SHA256" => admin_digest.as_str(),
                other => panic!("secret.yaml: this test has no valid value for {other}"),
            };
            (*name, value)
        })
        .collect();
    let client_digest = sha256_hex("client-token-for-this-test");
    let mut env = filled.clone();
    env.push(("AYRA_CACHE__AUTH__CLIENT_TOKENS_SHA256", &client_digest));
    let output = check_config_text(&config, &env);
    assert!(output.status.success(), "{}", show(&output));
    // Without the client token digests, the key alone is refused.
    let output = check_config_text(&config, &filled);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
}

// ----------------------------------------------------------- Kubernetes

#[test]
fn the_deployment_matches_the_configmap() {
    let config = toml_table(&configmap_toml(), "the ConfigMap's ayra-cache.toml");
    let listen = toml_str(&config, "server", "listen");
    let admin_listen = toml_str(&config, "server", "admin_listen");
    for addr in [listen, admin_listen] {
        assert!(
            addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:"),
            "{addr}: a pod must listen on every interface"
        );
    }
    let (http_port, admin_port) = (port_of(listen), port_of(admin_listen));
    assert_ne!(http_port, admin_port);

    let deployment = k8s("Deployment");
    let pod = at(&deployment, &["spec", "template"]);
    let spec = at(pod, &["spec"]);
    let containers = items(spec, &["containers"]);
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // Named container ports, by name.
    let ports: BTreeMap<String, u64> = items(container, &["ports"])
        .iter()
        .map(|p| (text(p, &["name"]).to_owned(), number(p, &["containerPort"])))
        .collect();
    assert_eq!(ports.get("http"), Some(&u64::from(http_port)), "{ports:?}");
    assert_eq!(
        ports.get("admin"),
        Some(&u64::from(admin_port)),
        "{ports:?}"
    );
    let resolve = |port: &Value| -> u64 {
        match port.as_str() {
            Some(name) => *ports.get(name).unwrap_or_else(|| panic!("no port {name}")),
            None => port.as_u64().expect("a port"),
        }
    };

    // Probes: GET /healthz, which both listeners serve; readiness on the
    // client port, liveness on either.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(text(container, &[probe, "httpGet", "path"]), "/healthz");
        let port = resolve(at(container, &[probe, "httpGet", "port"]));
        assert!(
            port == u64::from(http_port) || port == u64::from(admin_port),
            "{probe} probes port {port}, which the config does not listen on"
        );
    }
    assert_eq!(
        resolve(at(container, &["readinessProbe", "httpGet", "port"])),
        u64::from(http_port)
    );

    // The drain finishes before the kubelet's SIGKILL.
    let grace = duration(toml_str(&config, "server", "shutdown_grace"));
    let pre_stop = container
        .get("lifecycle")
        .and_then(|l| l.get("preStop"))
        .and_then(|p| p.get("sleep"))
        .map_or(0, |sleep| number(sleep, &["seconds"]));
    let termination = number(spec, &["terminationGracePeriodSeconds"]);
    assert!(
        termination > grace.as_secs() + pre_stop,
        "terminationGracePeriodSeconds {termination} <= preStop {pre_stop}s + shutdown_grace {grace:?}"
    );

    // Non-root, read-only, no capabilities.
    assert_eq!(
        at(spec, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    assert_ne!(number(spec, &["securityContext", "runAsUser"]), 0);
    let security = at(container, &["securityContext"]);
    assert_eq!(
        at(security, &["readOnlyRootFilesystem"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        at(security, &["allowPrivilegeEscalation"]).as_bool(),
        Some(false)
    );
    let dropped: Vec<&str> = items(security, &["capabilities", "drop"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(dropped, ["ALL"]);

    // The ConfigMap lands at the path the image's ENTRYPOINT reads.
    let configmap = k8s("ConfigMap");
    let mount = items(container, &["volumeMounts"])
        .iter()
        .find(|m| CONFIG_PATH.starts_with(text(m, &["mountPath"])))
        .expect("a volume mounted over /etc/ayra-cache");
    let volume = items(spec, &["volumes"])
        .iter()
        .find(|v| text(v, &["name"]) == text(mount, &["name"]))
        .expect("the mounted volume");
    assert_eq!(
        text(volume, &["configMap", "name"]),
        text(&configmap, &["metadata", "name"])
    );
    let item = &items(volume, &["configMap", "items"])[0];
    assert_eq!(text(item, &["key"]), "ayra-cache.toml");
    assert_eq!(
        format!("{}/{}", text(mount, &["mountPath"]), text(item, &["path"])),
        CONFIG_PATH
    );

    // The Secret, if any, is optional (pass-through needs none).
    let secret_ref = items(container, &["envFrom"])
        .iter()
        .find_map(|source| source.get("secretRef"))
        .expect("envFrom secretRef");
    assert_eq!(
        text(secret_ref, &["name"]),
        text(&k8s("Secret"), &["metadata", "name"])
    );
    assert_eq!(at(secret_ref, &["optional"]).as_bool(), Some(true));

    // Memory: the team's target, RSS <= 1.2 x bytes cached + 30 MB, fits
    // under the limit, and the request is the limit.
    let max_bytes: bytesize::ByteSize = toml_str(&config, "cache", "max_bytes").parse().unwrap();
    let limit = quantity_bytes(text(container, &["resources", "limits", "memory"]));
    let request = quantity_bytes(text(container, &["resources", "requests", "memory"]));
    let target = max_bytes.as_u64() * 12 / 10 + (30 << 20);
    assert!(
        limit >= target,
        "memory limit {limit} < 1.2 x {max_bytes} + 30 MiB = {target}"
    );
    assert_eq!(request, limit);

    // The pod template's labels are what the Service selects.
    let labels = at(pod, &["metadata", "labels"]);
    let service = k8s("Service");
    for (key, value) in at(&service, &["spec", "selector"]).as_mapping().unwrap() {
        assert_eq!(labels.get(key.as_str().unwrap()), Some(value));
    }
    let selector = at(&deployment, &["spec", "selector", "matchLabels"]);
    for (key, value) in selector.as_mapping().unwrap() {
        assert_eq!(labels.get(key.as_str().unwrap()), Some(value));
    }
}

#[test]
fn the_admin_port_is_not_exposed_to_clients() {
    let deployment = k8s("Deployment");
    let container = at(
        &deployment,
        &["spec", "template", "spec", "containers", "0"],
    );
    let admin_port = items(container, &["ports"])
        .iter()
        .find(|p| text(p, &["name"]) == "admin")
        .map(|p| number(p, &["containerPort"]))
        .expect("an admin port");
    let is_admin =
        |port: &Value| port.as_str() == Some("admin") || port.as_u64() == Some(admin_port);

    // No Service (client-facing or otherwise) routes to it.
    for path in files_under(&root().join("deploy/kubernetes"), &[".yaml"]) {
        for object in yaml_documents(&path) {
            if object.get("kind").and_then(Value::as_str) == Some("Service") {
                for port in items(&object, &["spec", "ports"]) {
                    let target = port.get("targetPort").unwrap_or(at(port, &["port"]));
                    assert!(
                        !is_admin(target),
                        "{}: exposes the admin port",
                        path.display()
                    );
                    assert!(!is_admin(at(port, &["port"])), "{}", path.display());
                }
            }
        }
    }

    // The NetworkPolicy lets the admin port in only from named sources.
    let policy = k8s("NetworkPolicy");
    let mut admin_rules = 0;
    for rule in items(&policy, &["spec", "ingress"]) {
        let ports = rule.get("ports").and_then(Value::as_sequence);
        let opens_admin =
            ports.is_none_or(|ports| ports.iter().any(|p| is_admin(at(p, &["port"]))));
        if opens_admin {
            admin_rules += 1;
            let from = rule.get("from").and_then(Value::as_sequence);
            assert!(
                from.is_some_and(|from| !from.is_empty()),
                "an ingress rule opens the admin port to everyone"
            );
        }
    }
    assert!(admin_rules > 0, "nothing may scrape the admin port");
}

#[test]
fn the_kustomization_lists_files_that_exist_and_builds() {
    let dir = root().join("deploy/kubernetes");
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<&str> = items(&kustomization, &["resources"])
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for resource in &resources {
        assert!(
            dir.join(resource).is_file(),
            "{resource} is listed but absent"
        );
    }
    for needed in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        assert!(
            resources.contains(&needed),
            "{needed} not in kustomization.yaml"
        );
    }
    let kubectl = tool("kubectl", "kubernetes-client");
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let rendered = String::from_utf8(output.stdout).unwrap();
    let kinds: BTreeSet<String> = serde_norway::Deserializer::from_str(&rendered)
        .map(|d| text(&Value::deserialize(d).unwrap(), &["kind"]).to_owned())
        .collect();
    for kind in ["ConfigMap", "Deployment", "Service"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn the_shared_overlay_turns_on_a_valid_shared_tier() {
    let dir = root().join("deploy/kubernetes-shared");
    let kustomization = yaml("deploy/kubernetes-shared/kustomization.yaml");
    for resource in items(&kustomization, &["resources"]) {
        assert!(
            dir.join(resource.as_str().unwrap()).exists(),
            "{resource:?} is absent"
        );
    }
    for patch in items(&kustomization, &["patches"]) {
        assert!(dir.join(text(patch, &["path"])).is_file());
    }
    let patch = yaml("deploy/kubernetes-shared/deployment-patch.yaml");
    assert_eq!(number(&patch, &["spec", "replicas"]), 3);
    let env: Vec<(String, String)> = items(
        &patch,
        &["spec", "template", "spec", "containers", "0", "env"],
    )
    .iter()
    .map(|var| {
        (
            text(var, &["name"]).to_owned(),
            text(var, &["value"]).to_owned(),
        )
    })
    .collect();
    let redis_url = &env
        .iter()
        .find(|(name, _)| name == "AYRA_CACHE__SHARED__REDIS_URL")
        .expect("the Redis URL")
        .1;
    // The URL names redis.yaml's Service and port.
    let redis = yaml_documents(&dir.join("redis.yaml"));
    let service = redis
        .iter()
        .find(|o| text(o, &["kind"]) == "Service")
        .expect("a Service");
    let port = number(service, &["spec", "ports", "0", "port"]);
    assert!(
        redis_url.contains(&format!(
            "//{}:{port}",
            text(service, &["metadata", "name"])
        )),
        "{redis_url}"
    );
    // The base config plus this environment is a valid config.
    let vars: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let output = check_config_text(&configmap_toml(), &vars);
    assert!(output.status.success(), "{}", show(&output));
    let mut misspelt = vars.clone();
    misspelt.push(("AYRA_CACHE__SHARED__TIMEOUTT", "1s"));
    assert_eq!(
        check_config_text(&configmap_toml(), &misspelt)
            .status
            .code(),
        Some(2)
    );
}

// ---------------------------------------------------------------- Docker

/// The Dockerfile's instructions: continuation lines joined, comments gone.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, rest) = current.split_once(char::is_whitespace).unwrap();
                instructions.push((keyword.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    instructions
}

#[test]
fn the_dockerfile_builds_locked_in_a_builder_and_runs_as_non_root() {
    let instructions = dockerfile_instructions();
    let froms: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].0 == "FROM")
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    let first = instructions[froms[0]].1.to_lowercase();
    assert!(first.ends_with(" as builder"), "FROM {first}");
    let last = *froms.last().unwrap();
    assert!(!instructions[last].1.to_lowercase().contains(" as builder"));

    let build_stage = &instructions[froms[0]..last];
    assert!(
        build_stage.iter().any(|(keyword, rest)| keyword == "RUN"
            && rest.contains("cargo build --release --locked --bin ayra-cache")),
        "the builder runs cargo build --release --locked --bin ayra-cache"
    );

    let runtime = &instructions[last..];
    let user = runtime
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "USER")
        .map(|(_, user)| user.split(':').next().unwrap().to_owned())
        .expect("a USER in the runtime stage");
    assert!(user != "root" && user != "0", "USER {user}");

    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|(keyword, _)| keyword == "EXPOSE")
        .flat_map(|(_, ports)| ports.split_whitespace())
        .map(|port| port.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    let entrypoint: Vec<String> = runtime
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "ENTRYPOINT")
        .map(|(_, json)| serde_json::from_str(json).expect("ENTRYPOINT in exec form"))
        .expect("an ENTRYPOINT");
    assert!(entrypoint[0].ends_with("/ayra-cache"), "{entrypoint:?}");
    assert_eq!(entrypoint[1..], ["--config", CONFIG_PATH]);

    // The config copied to CONFIG_PATH exists, passes (above), and listens
    // on every interface at the ports the image exposes.
    let mut config_source = None;
    for (keyword, rest) in runtime.iter().chain(build_stage) {
        if keyword != "COPY" || rest.starts_with("--from") {
            continue;
        }
        let args: Vec<&str> = rest
            .split_whitespace()
            .filter(|a| !a.starts_with("--"))
            .collect();
        let (destination, sources) = args.split_last().unwrap();
        for source in sources {
            assert!(root().join(source).exists(), "COPY {source}: no such path");
        }
        if *destination == CONFIG_PATH {
            config_source = Some(sources[0].to_owned());
        }
    }
    let config_source = config_source.expect("a COPY of the config to /etc/ayra-cache");
    let config = toml_table(&read(&config_source), &config_source);
    let listen = toml_str(&config, "server", "listen");
    let admin_listen = toml_str(&config, "server", "admin_listen");
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    assert!(admin_listen.starts_with("0.0.0.0:"), "{admin_listen}");
    assert_eq!(
        exposed,
        BTreeSet::from([port_of(listen), port_of(admin_listen)])
    );

    // The build context filter keeps the local build output out.
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));
}

// --------------------------------------------------------------- systemd

fn unit_text() -> String {
    read("deploy/ayra-cache.service")
}

/// Every value of `key` in the unit, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// `systemd-analyze verify` on `unit`, with the ayra-cache binary of its
/// Exec lines pointed at the one cargo built (verify insists the binary
/// exists). Anything it says about the unit counts as an error: it exits 0
/// on settings it ignores, such as a misspelt value.
fn systemd_verify(analyze: &Path, unit: &str) -> Result<(), String> {
    let binary = if BINARY.contains(char::is_whitespace) {
        format!("\"{BINARY}\"")
    } else {
        BINARY.to_owned()
    };
    let mut rewritten = 0;
    let lines: Vec<String> = unit
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, value)) if key.starts_with("Exec") => {
                let (program, args) = value.split_once(' ').unwrap_or((value, ""));
                if Path::new(program.trim_start_matches(['-', '@', '+', '!', ':'])).file_name()
                    == Some("ayra-cache".as_ref())
                {
                    rewritten += 1;
                    format!("{key}={binary} {args}")
                } else {
                    line.to_owned()
                }
            }
            _ => line.to_owned(),
        })
        .collect();
    assert!(rewritten >= 1, "no Exec line runs ayra-cache");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ayra-cache.service");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ayra-cache.service"))
        .collect();
    if output.status.success() && complaints.is_empty() {
        Ok(())
    } else {
        Err(show(&output))
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_drains_within_its_stop_timeout() {
    let unit = unit_text();
    let one = |key: &str| -> String {
        let values = unit_values(&unit, key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0].clone()
    };
    assert!(
        one("ExecStart").ends_with(&format!("--config {CONFIG_PATH}")),
        "ExecStart reads {CONFIG_PATH}"
    );
    assert!(one("ExecStartPre").contains(&format!("--check-config --config {CONFIG_PATH}")));
    assert!(one("EnvironmentFile")
        .trim_start_matches('-')
        .starts_with("/etc/ayra-cache/"));
    assert!(one("DynamicUser") == "yes" || !unit_values(&unit, "User").is_empty());
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestartPreventExitStatus", "2"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(["on-failure", "always"].contains(&one("Restart").as_str()));

    // systemd sends SIGKILL after TimeoutStopSec: it must outlast the drain
    // of the config the unit points at (config/ayra-cache.toml installed).
    let config = toml_table(&read("config/ayra-cache.toml"), "config/ayra-cache.toml");
    let grace = duration(toml_str(&config, "server", "shutdown_grace"));
    let stop = duration(&one("TimeoutStopSec"));
    assert!(
        stop > grace,
        "TimeoutStopSec {stop:?} <= shutdown_grace {grace:?}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let analyze = tool("systemd-analyze", "systemd");
    let unit = unit_text();
    if let Err(report) = systemd_verify(&analyze, &unit) {
        panic!("systemd-analyze verify: {report}");
    }
    // The same check catches a broken unit, including settings systemd
    // would only warn about and ignore.
    for (from, to) in [
        ("Restart=on-failure", "Restart=sometimes"),
        ("ProtectSystem=strict", "ProtectSystem=stric"),
        ("[Service]", "[Servic]"),
    ] {
        assert!(unit.contains(from), "{from}");
        assert!(
            systemd_verify(&analyze, &unit.replace(from, to)).is_err(),
            "{to} went unnoticed"
        );
    }

    // The exposure score (0 = locked down, 10 = none) stays at "OK" or
    // better; --threshold is in tenths. Needs systemd >= 250 (--offline).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ayra-cache.service");
    std::fs::write(&path, &unit).unwrap();
    let output = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "exposure above 2.0: {}",
        show(&output)
    );
}

// ------------------------------------------------------------ Prometheus

/// Series names the proxy exports, from its own registry (each labelled
/// family counted once, since an empty one is not written): counters with
/// `_total`, histograms with `_count`, `_sum` and `_bucket`.
fn exported_series() -> (BTreeSet<String>, String) {
    use ayra_cache::metrics::Metrics;
    let metrics = Metrics::new();
    metrics.upstream(Duration::ZERO, None);
    for error in ayra_cache::upstream::UpstreamError::ALL {
        metrics.upstream(Duration::ZERO, Some(error.fault()));
    }
    metrics.stored();
    metrics.store_refused(ayra_cache::cache::policy::NoStoreReason::InProgress.as_str());
    metrics.eviction("size");
    let text = metrics.encode(0, 0);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = declaration.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_count", "_sum", "_bucket"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    (names, text)
}

/// A label matcher: the label and the values it accepts (`a|b` split).
type Matcher = (String, Vec<String>);

/// `(name, matchers)` for each `ayra_cache_*` selector in a PromQL expression.
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("ayra_cache_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        rest = &tail[end..];
        if let Some(body) = rest.strip_prefix('{') {
            let close = body.find('}').expect("closing brace");
            for matcher in body[..close].split(',').filter(|m| !m.trim().is_empty()) {
                let (label, value) = matcher
                    .split_once("=~")
                    .or_else(|| matcher.split_once('='))
                    .unwrap();
                let value = value.trim().trim_matches('"');
                labels.push((
                    label.trim().to_owned(),
                    value.split('|').map(str::to_owned).collect(),
                ));
            }
            rest = &body[close..];
        }
        found.push((name, labels));
    }
    found
}

#[test]
fn the_alert_rules_use_the_metrics_the_proxy_exports() {
    let (exported, exposition) = exported_series();
    assert!(
        exported.contains("ayra_cache_requests_total"),
        "{exported:?}"
    );
    let rules = yaml("deploy/prometheus/alerts.yml");
    let mut alerts = BTreeMap::new();
    for group in items(&rules, &["groups"]) {
        for rule in items(group, &["rules"]) {
            alerts.insert(
                text(rule, &["alert"]).to_owned(),
                text(rule, &["expr"]).to_owned(),
            );
        }
    }
    for needed in [
        "AyraCacheDown",
        "AyraCacheUpstreamErrors",
        "AyraCacheHitRatioLow",
        "AyraCacheNearByteBound",
    ] {
        assert!(alerts.contains_key(needed), "no alert {needed}");
    }
    for (alert, expr) in &alerts {
        for (name, labels) in selectors(expr) {
            assert!(exported.contains(&name), "{alert}: {name} is not exported");
            // Label values on the request counter (every series exists
            // from the start) must be ones it has.
            if name == "ayra_cache_requests_total" {
                for (label, values) in labels {
                    for value in values {
                        assert!(
                            exposition.contains(&format!("{label}=\"{value}\"")),
                            "{alert}: no series with {label}=\"{value}\""
                        );
                    }
                }
            }
        }
    }

    // The byte bound is a constant in the rule: it must be the ConfigMap's.
    let config = toml_table(&configmap_toml(), "the ConfigMap's ayra-cache.toml");
    let max_bytes: bytesize::ByteSize = toml_str(&config, "cache", "max_bytes").parse().unwrap();
    let expr = &alerts["AyraCacheNearByteBound"];
    assert!(
        expr.contains(&max_bytes.as_u64().to_string()),
        "AyraCacheNearByteBound ({expr}) does not use cache.max_bytes = {}",
        max_bytes.as_u64()
    );

    // The rules match the scrape jobs, and the Kubernetes job keeps the
    // Deployment's admin port.
    let scrape = yaml("deploy/prometheus/scrape.yml");
    let jobs = items(&scrape, &["scrape_configs"]);
    for job in jobs {
        assert!(text(job, &["job_name"]).starts_with("ayra-cache"));
    }
    assert!(alerts["AyraCacheDown"].contains("job=~\"ayra-cache.*\""));
    let keeps_admin = jobs.iter().any(|job| {
        job.get("relabel_configs")
            .and_then(Value::as_sequence)
            .is_some_and(|relabels| {
                relabels.iter().any(|r| {
                    r.get("regex").and_then(Value::as_str) == Some("admin")
                        && items(r, &["source_labels"])[0].as_str()
                            == Some("__meta_kubernetes_pod_container_port_name")
                })
            })
    });
    assert!(keeps_admin, "no job scrapes the container port named admin");
}

#[test]
fn promtool_accepts_the_rules_their_tests_and_the_scrape_config() {
    let promtool = tool("promtool", "prometheus");
    let dir = root().join("deploy/prometheus");
    let run = |args: &[&str]| -> Output {
        Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"][..],
    ] {
        let output = run(args);
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            show(&output)
        );
    }

    let output = run(&["check", "config", "scrape.yml"]);
    if output.status.success() {
        return;
    }
    // Debian's promtool is built without Kubernetes service discovery; check
    // the rest of the file with static targets in place of the discovery.
    let report = show(&output);
    assert!(
        report.contains("kubernetes_sd_configs not found"),
        "promtool check config: {report}"
    );
    eprintln!(
        "NOTE: this promtool lacks Kubernetes discovery; checking scrape.yml with static targets in its place"
    );
    let mut config = yaml("deploy/prometheus/scrape.yml");
    let rules = dir.join("alerts.yml").display().to_string();
    config["rule_files"] = Value::Sequence(vec![Value::String(rules)]);
    for job in config["scrape_configs"].as_sequence_mut().unwrap() {
        let job = job.as_mapping_mut().unwrap();
        if job.remove("kubernetes_sd_configs").is_some() {
            let targets: Value = serde_norway::from_str("[{targets: ['127.0.0.1:9090']}]").unwrap();
            job.insert("static_configs".into(), targets);
        }
    }
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("scrape.yml");
    std::fs::write(&path, serde_norway::to_string(&config).unwrap()).unwrap();
    let output = run(&["check", "config", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "promtool check config: {}",
        show(&output)
    );
}

#[test]
fn systemctl_reload_checks_the_config_then_sends_sighup() {
    let unit = unit_text();
    let reload = unit_values(&unit, "ExecReload");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[0].contains(&format!("--check-config --config {CONFIG_PATH}")));
    assert!(reload[1].contains("-HUP $MAINPID"), "{}", reload[1]);
}
