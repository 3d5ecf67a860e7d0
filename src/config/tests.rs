use super::*;

const EXAMPLE: &str = include_str!("../../install/site.example.toml");

fn facts() -> MachineFacts {
    MachineFacts {
        hostname: Some("pi-01".into()),
        default_route_addr: Some("192.168.1.20".parse().unwrap()),
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(Path::new("/etc/p2pu/site.toml"), text, Some(&facts()))
}

/// The error's one-line message, for asserting what an operator reads.
fn error(text: &str) -> String {
    load(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn empty_config_is_all_defaults() {
    let config = load("").unwrap();
    assert_eq!(config.site, SiteToml::default());
    assert_eq!(config.node_name.as_deref(), Some("pi-01"));
    assert_eq!(config.advertise, Some("192.168.1.20".parse().unwrap()));
    assert_eq!(config.serf_rpc, "127.0.0.1:7373".parse().unwrap());
}

#[test]
fn example_config_is_the_defaults_spelled_out() {
    let config = load(EXAMPLE).unwrap();
    assert_eq!(config.site, SiteToml::default());
}

#[test]
fn overrides_beat_machine_facts() {
    let config = load("[node]\nname = \"kitchen\"\n[serf]\nadvertise = \"10.0.0.5\"\n").unwrap();
    assert_eq!(config.node_name.as_deref(), Some("kitchen"));
    assert_eq!(config.advertise, Some("10.0.0.5".parse().unwrap()));
}

#[test]
fn image_builds_leave_node_values_to_the_device() {
    let config = Config::from_str(Path::new("site.toml"), "", None).unwrap();
    assert_eq!(config.node_name, None);
    assert_eq!(config.advertise, None);
}

#[test]
fn missing_hostname_is_reported() {
    let err =
        Config::from_str(Path::new("s.toml"), "", Some(&MachineFacts::default())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "s.toml: cannot work out node.name: the machine has no hostname; set it in the config"
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_eq!(
        error("[serf]\nbind = \n"),
        "/etc/p2pu/site.toml:2:8: invalid string\nexpected `\"`, `'`"
    );
}

#[test]
fn unknown_keys_are_errors() {
    let msg = error("[transmission]\nrpc_prot = 9091\n");
    assert!(
        msg.starts_with("/etc/p2pu/site.toml:2:1: unknown field `rpc_prot`"),
        "{msg}"
    );
    let msg = error("[agnet]\n");
    assert!(
        msg.starts_with("/etc/p2pu/site.toml:1:2: unknown field `agnet`"),
        "{msg}"
    );
}

#[test]
fn wrong_types_are_errors() {
    let msg = error("[transmission]\npeer_port = \"x\"\n");
    assert!(
        msg.starts_with("/etc/p2pu/site.toml:2:13: invalid type"),
        "{msg}"
    );
    let msg = error("[transmission]\npeer_port = 70000\n");
    assert!(msg.starts_with("/etc/p2pu/site.toml:2:13:"), "{msg}");
}

#[test]
fn bad_values_name_file_line_key_and_reason() {
    let cases = [
        ("[serf]\nbind = \"1.2.3.4\"\n", "/etc/p2pu/site.toml:2: serf.bind = \"1.2.3.4\": expected an address:port such as 0.0.0.0:7946"),
        ("[serf]\nbind = \"0.0.0.0:0\"\n", "/etc/p2pu/site.toml:2: serf.bind = \"0.0.0.0:0\": port 0 is not a usable port"),
        ("[serf]\nrpc_addr = \"0.0.0.0:7373\"\n", "/etc/p2pu/site.toml:2: serf.rpc_addr = \"0.0.0.0:7373\": must be a loopback address: Serf's RPC is unencrypted"),
        ("[serf]\nadvertise = \"host\"\n", "/etc/p2pu/site.toml:2: serf.advertise = \"host\": expected an IP address"),
        ("\n[serf.tags]\np2pu-role = \"x\"\n", "/etc/p2pu/site.toml:3: serf.tags = \"p2pu-role\": tags starting with `p2pu` are set by p2pu itself"),
        ("[serf]\nuser_event_size_limit = 100\n", "/etc/p2pu/site.toml:2: serf.user_event_size_limit = 100: Serf accepts 512 to 9216"),
        ("[transmission]\nrpc_user = \"a:b\"\n", "/etc/p2pu/site.toml:2: transmission.rpc_user = \"a:b\": must be non-empty and contain no `:`"),
        ("[transmission.extra]\nrpc-port = 1\n", "/etc/p2pu/site.toml:2: transmission.extra = \"rpc-port\": settings.json key `rpc-port` is managed by p2pu; set transmission.rpc_port instead"),
        ("[transmission]\npeer_port = 7946\n", "/etc/p2pu/site.toml:2: transmission.peer_port = 7946: conflicts with serf.bind, which uses the same port"),
        ("[agent]\nspool_dir = \"spool\"\n", "/etc/p2pu/site.toml:2: agent.spool_dir = \"spool\": must be an absolute path"),
        ("[agent]\nstate_dir = \"/var/../etc\"\n", "/etc/p2pu/site.toml:2: agent.state_dir = \"/var/../etc\": must not contain `..`"),
        ("[agent]\nserve_user = \"root\"\n", "/etc/p2pu/site.toml:2: agent.serve_user = \"root\": must be an unprivileged user: the tracker and web seed server face the network"),
        ("[agent]\nserve_user = \"P2PU; rm\"\n", "/etc/p2pu/site.toml:2: agent.serve_user = \"P2PU; rm\": expected a system user name: 1 to 32 of `a-z`, `0-9`, `_`, `-`, not starting with a digit or `-`"),
        ("[agent]\nfetch_min_rate_bytes_per_sec = 10\n", "/etc/p2pu/site.toml:2: agent.fetch_min_rate_bytes_per_sec = 10: use at least 1024: a slower floor lets a trickling member hold an update for days"),
        ("[agent]\nfetch_rate_window_secs = 0\n", "/etc/p2pu/site.toml:2: agent.fetch_rate_window_secs = 0: use 5 to 600: shorter windows punish a brief stall, longer ones let a trickle last"),
        ("[agent]\nfetch_slack_secs = 1\n", "/etc/p2pu/site.toml:2: agent.fetch_slack_secs = 1: use 60 to 604800: finding peers takes a minute or more"),
        ("[nat]\nenabled = true\n", "/etc/p2pu/site.toml:2: nat.enabled = true: needs nat.proxy (host:port of the rendezvous)"),
        ("[nat]\nproxy = \"example.org\"\n", "/etc/p2pu/site.toml:2: nat.proxy = \"example.org\": expected host:port"),
        ("[nat]\nkeepalive_secs = 30\n", "/etc/p2pu/site.toml:2: nat.keepalive_secs = 30: use 5 to 29: routers drop idle UDP mappings after 30 s"),
        ("[nat]\nstun_server = \"stun\"\n", "/etc/p2pu/site.toml:2: nat.stun_server = \"stun\": expected host:port"),
        ("[nat]\nkeepalive_secs = 20\npeer_expiry_secs = 30\n", "/etc/p2pu/site.toml:3: nat.peer_expiry_secs = 30: use at least twice nat.keepalive_secs: peers ping once per keepalive"),
        ("[nat]\nrelay_rate_kbps = 0\n", "/etc/p2pu/site.toml:2: nat.relay_rate_kbps = 0: must be positive: relayed sessions would carry no bytes"),
        ("[nat]\ncontrol_socket = \"run/c.sock\"\n", "/etc/p2pu/site.toml:2: nat.control_socket = \"run/c.sock\": must be an absolute path"),
        ("[time]\nntp = [\"\"]\n", "/etc/p2pu/site.toml:2: time.ntp = \"\": expected a host name or address"),
        ("[node]\nname = \"a b\"\n", "/etc/p2pu/site.toml:2: node.name = \"a b\": use 1 to 64 letters, digits, `-`, `_` or `.`"),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "for config {text:?}");
    }
}

#[test]
fn nat_port_conflicts_only_when_nat_is_used() {
    assert!(load("[nat]\nport = 9091\n").is_ok());
    let msg = error("[node]\nrole = \"proxy\"\n[nat]\nport = 9091\n");
    assert_eq!(msg, "/etc/p2pu/site.toml:4: nat.port = 9091: conflicts with transmission.rpc_port, which uses the same port");
}

#[test]
fn line_column_counts_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab", 99), (1, 3));
}
