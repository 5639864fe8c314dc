//! The deployment files cannot run here (no Docker engine, no cluster): check that they
//! parse and agree with the configs they ship and with the binary's defaults.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn yaml(p: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn load(main: &Path) -> tollgate::config::Config {
    tollgate::config::load(main).unwrap_or_else(|e| panic!("{}:\n{e}", main.display()))
}

/// The binary's default listener ports.
fn default_ports() -> (u16, u16) {
    let c = tollgate::config::load_from_str(Path::new("x/t.toml"), "upstream = \"http://a\"\n", "")
        .unwrap();
    (c.listen.port(), c.admin_listen.port())
}

#[test]
fn dockerfile_matches_defaults_and_ci() {
    let d = read("deploy/Dockerfile");
    let (listen, admin) = default_ports();
    assert!(
        d.lines()
            .any(|l| l.trim() == format!("EXPOSE {listen} {admin}")),
        "EXPOSE"
    );
    assert!(d.contains("HEALTHCHECK") && d.contains("\"healthcheck\"]"));
    assert!(d.contains("STOPSIGNAL SIGTERM"));
    assert!(d.contains("USER nonroot"));
    assert!(
        d.contains("FROM rust:") && d.contains("COPY --from=build"),
        "multi-stage"
    );
    let build = d
        .lines()
        .find_map(|l| l.trim().strip_prefix("RUN cargo build"))
        .expect("a RUN cargo build line");
    let ci = read(".ci/run");
    assert!(
        ci.lines()
            .any(|l| l.trim() == format!("cargo build{build}")),
        ".ci/run builds with `cargo build{build}`"
    );
    // The config the image ships is the example config.
    assert!(d.contains("COPY config/tollgate.toml config/accounts.toml /etc/tollgate/"));
    assert!(d.contains("TOLLGATE_CONFIG=/etc/tollgate/tollgate.toml"));
}

#[test]
fn compose_file_agrees_with_its_config() {
    let doc = &yaml("deploy/compose.yaml")[0];
    let tg = &doc["services"]["tollgate"];
    let cfg = load(&root().join("deploy/compose/tollgate.toml"));
    let ports: Vec<&str> = tg["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        ports.contains(&format!("{0}:{0}", cfg.listen.port()).as_str()),
        "{ports:?}"
    );
    assert!(
        ports.contains(&format!("{0}:{0}", cfg.admin_listen.port()).as_str()),
        "{ports:?}"
    );
    assert!(
        cfg.admin_listen.ip().is_unspecified(),
        "admin must be reachable for the healthcheck probe"
    );
    let config_path = tg["environment"]["TOLLGATE_CONFIG"].as_str().unwrap();
    let config_dir = Path::new(config_path).parent().unwrap().to_str().unwrap();
    let volumes: Vec<&str> = tg["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        volumes.contains(&format!("./compose:{config_dir}:ro").as_str()),
        "{volumes:?}"
    );
    let hc: Vec<&str> = tg["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(hc, ["CMD", "/usr/local/bin/tollgate", "healthcheck"]);
    assert_eq!(
        tg["depends_on"]["idp"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(tg["read_only"].as_bool(), Some(true));
    // The IdP names itself as the config expects, and the upstream is a compose service.
    let idp = &doc["services"]["idp"];
    assert_eq!(
        idp["environment"]["IDP_ISSUER"].as_str(),
        Some(cfg.providers[0].issuer.as_str())
    );
    assert_eq!(cfg.upstream.authority.host(), "echo");
    assert!(!doc["services"]["echo"].is_badvalue());
    assert_eq!(idp["build"]["context"].as_str(), Some("../tests/idp"));
    assert!(root().join("tests/idp/Dockerfile").is_file());
}

#[test]
fn kubernetes_manifests_agree_with_the_configmap() {
    let cm = &yaml("deploy/k8s/configmap.yaml")[0];
    let dir = tempfile::tempdir().unwrap();
    for f in ["tollgate.toml", "accounts.toml"] {
        std::fs::write(dir.path().join(f), cm["data"][f].as_str().unwrap()).unwrap();
    }
    let cfg = load(&dir.path().join("tollgate.toml"));

    let dep = &yaml("deploy/k8s/deployment.yaml")[0];
    let spec = &dep["spec"]["template"]["spec"];
    let containers = spec["containers"].as_vec().unwrap();
    let tg = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("tollgate"))
        .unwrap();
    let app = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("app"))
        .unwrap();
    let port = |name: &str| {
        tg["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap()["containerPort"]
            .as_i64()
            .unwrap() as u16
    };
    assert_eq!(port("http"), cfg.listen.port());
    assert_eq!(port("admin"), cfg.admin_listen.port());
    assert_eq!(
        tg["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        tg["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        tg["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        tg["livenessProbe"]["httpGet"]["port"].as_str(),
        Some("admin")
    );
    assert!(
        cfg.admin_listen.ip().is_unspecified(),
        "probes come from the kubelet"
    );
    // The app listens where the sidecar forwards, on loopback only.
    assert_eq!(cfg.upstream.authority.as_str(), "127.0.0.1:9000");
    assert!(
        app["args"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some("127.0.0.1:9000"))
    );
    // The config is mounted where TOLLGATE_CONFIG points, from the ConfigMap.
    let env = tg["env"].as_vec().unwrap();
    let path = env
        .iter()
        .find(|e| e["name"].as_str() == Some("TOLLGATE_CONFIG"))
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let mount = &tg["volumeMounts"][0];
    assert_eq!(
        Some(Path::new(path).parent().unwrap().to_str().unwrap()),
        mount["mountPath"].as_str()
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let vol = spec["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        vol["configMap"]["name"].as_str(),
        cm["metadata"]["name"].as_str()
    );
    // Hardening and resources.
    for c in [tg, app] {
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
            Some(false)
        );
        assert!(!c["resources"]["limits"]["memory"].is_badvalue());
        assert!(!c["resources"]["requests"]["cpu"].is_badvalue());
    }
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(
        grace > cfg.limits.shutdown_timeout.as_secs(),
        "grace period must cover the drain"
    );
    let ann = &dep["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        ann["prometheus.io/port"].as_str().map(str::to_string),
        Some(cfg.admin_listen.port().to_string())
    );
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));

    // The Service targets the sidecar, never the app.
    let svc = &yaml("deploy/k8s/service.yaml")[0];
    assert_eq!(svc["spec"]["ports"][0]["targetPort"].as_str(), Some("http"));
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let pm = &yaml("deploy/k8s/servicemonitor.yaml")[0];
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("admin")
    );
}

#[test]
fn systemd_unit_is_hardened_and_reloads_with_sighup() {
    let u = read("deploy/systemd/tollgate.service");
    for directive in [
        "User=tollgate",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/tollgate run",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            u.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
    let stop: u64 = u
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > default_shutdown_secs());
}

fn default_shutdown_secs() -> u64 {
    tollgate::config::load_from_str(Path::new("x/t.toml"), "upstream = \"http://a\"\n", "")
        .unwrap()
        .limits
        .shutdown_timeout
        .as_secs()
}
