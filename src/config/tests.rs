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
fn unknown_keys_are_errors_that_list_the_known_ones() {
    let msg = error("[transmission]\nrpc_prot = 9091\n");
    assert!(
        msg.starts_with("/etc/p2pu/site.toml:2: transmission.rpc_prot = 9091: unknown key `rpc_prot`; did you mean `rpc_port`? (known here: rpc_port, rpc_user,"),
        "{msg}"
    );
    // An unknown section is one error, however many keys it has.
    let msg = error("[agnet]\nspool_dir = \"/s\"\nstate_dir = \"/t\"\n");
    assert!(
        msg.starts_with(
            "/etc/p2pu/site.toml:1: agnet: unknown key `agnet`; did you mean `agent`? (known here: node,"
        ),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn wrong_types_are_errors() {
    assert_eq!(
        error("[transmission]\npeer_port = \"x\"\n"),
        "/etc/p2pu/site.toml:2: transmission.peer_port = \"x\": expected a port number from 1 to 65535, found the string \"x\""
    );
    assert_eq!(
        error("[agent]\nseed_port = 99999\n"),
        "/etc/p2pu/site.toml:2: agent.seed_port = 99999: expected a port number from 1 to 65535, found the number 99999"
    );
    assert_eq!(
        error("node = 5\n"),
        "/etc/p2pu/site.toml:1: node = 5: expected a table of keys (a [section]), found the number 5"
    );
    // Issue 29: serde's jargon (`expected u32`, `expected a sequence`) in words.
    assert_eq!(
        error("[agent]\nretries = \"3\"\nhealth_check = \"/bin/check\"\n"),
        "/etc/p2pu/site.toml:2: agent.retries = \"3\": expected a whole number from 0 to 4294967295, found the string \"3\"\n/etc/p2pu/site.toml:3: agent.health_check = \"/bin/check\": expected a list, such as [\"a\", \"b\"], found the string \"/bin/check\""
    );
    // A key nothing is close to gets the list alone.
    let msg = error("[serf]\nzzzzzz = 1\n");
    assert!(msg.contains("unknown key `zzzzzz` (known here: "), "{msg}");
}

#[test]
fn every_error_in_the_file_is_reported_on_its_own_line_in_file_order() {
    let text = "[serf]\njoin = [\"10.0.0.300\"]\nbind = \"nope\"\n\n[transmission]\npeer_port = 99999\nrpc_prot = 1\n\n[agent]\nspool_dir = \"spool\"\n\n[nat]\nrelay_rate_kbps = 0\n";
    let msg = error(text);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(
        lines,
        [
            "/etc/p2pu/site.toml:2: serf.join = \"10.0.0.300\": `10.0.0.300` is not an IPv4 address (four numbers from 0 to 255); expected a host or host:port such as 10.0.0.1 or node-1.example.org:7946",
            "/etc/p2pu/site.toml:3: serf.bind = \"nope\": expected an address:port such as 0.0.0.0:7946",
            "/etc/p2pu/site.toml:6: transmission.peer_port = 99999: expected a port number from 1 to 65535, found the number 99999",
            "/etc/p2pu/site.toml:7: transmission.rpc_prot = 1: unknown key `rpc_prot`; did you mean `rpc_port`? (known here: rpc_port, rpc_user, rpc_password, rpc_password_file, peer_port, download_dir, dht, lpd, pex, utp, encryption, settings_file, user, extra)",
            "/etc/p2pu/site.toml:10: agent.spool_dir = \"spool\": must be an absolute path",
            "/etc/p2pu/site.toml:13: nat.relay_rate_kbps = 0: must be positive: relayed sessions would carry no bytes",
        ],
        "{msg}"
    );
}

#[test]
fn join_entries_must_be_hosts_with_usable_ports() {
    for good in [
        "10.0.0.1",
        "10.0.0.1:7946",
        "node-1.example.org",
        "node-1:7946",
        "::1",
        "[fe80::1]:7946",
    ] {
        let text = format!("[serf]\njoin = [{good:?}]\n");
        assert!(load(&text).is_ok(), "{good} should be accepted");
    }
    let hint = "expected a host or host:port such as 10.0.0.1 or node-1.example.org:7946";
    for (bad, why) in [
        ("10.0.0.300", "`10.0.0.300` is not an IPv4 address (four numbers from 0 to 255)"),
        ("10.0.0.1:99999", "port `99999` is not from 1 to 65535"),
        ("10.0.0.1:0", "port `0` is not from 1 to 65535"),
        ("node-1:", "port `` is not from 1 to 65535"),
        ("fe80::1:7946:x", "an IPv6 address with a port is written [address]:port"),
        ("a b", "`a b` is neither an IP address nor a host name (letters, digits, `-` and `_`, dot-separated)"),
        ("", "`` is neither an IP address nor a host name (letters, digits, `-` and `_`, dot-separated)"),
    ] {
        let text = format!("[serf]\njoin = [{bad:?}]\n");
        assert_eq!(
            error(&text),
            format!("/etc/p2pu/site.toml:2: serf.join = {bad:?}: {why}; {hint}")
        );
    }
}

#[test]
fn proxy_and_stun_server_need_a_host_and_a_usable_port() {
    for good in ["proxy.example.org:3478", "10.0.0.1:3478", "[::1]:3478"] {
        let text = format!("[nat]\nproxy = {good:?}\nstun_server = {good:?}\n");
        assert!(load(&text).is_ok(), "{good} should be accepted");
    }
    let hint = "expected a host:port such as 10.0.0.1:3478 or proxy.example.org:3478";
    assert_eq!(
        error("[nat]\nproxy = \"10.0.0.300:3478\"\n"),
        format!("/etc/p2pu/site.toml:2: nat.proxy = \"10.0.0.300:3478\": `10.0.0.300` is not an IPv4 address (four numbers from 0 to 255); {hint}")
    );
    assert_eq!(
        error("[nat]\nstun_server = \"stun:70000\"\n"),
        format!("/etc/p2pu/site.toml:2: nat.stun_server = \"stun:70000\": port `70000` is not from 1 to 65535; {hint}")
    );
}

#[test]
fn a_port_conflict_blames_the_key_the_operator_wrote() {
    // serf.bind comes first in the list, but transmission.rpc_port was never written.
    assert_eq!(
        error("[serf]\nbind = \"0.0.0.0:9091\"\n"),
        "/etc/p2pu/site.toml:2: serf.bind = \"0.0.0.0:9091\": port 9091 is already used by transmission.rpc_port (its default); give one of them another port"
    );
    assert_eq!(
        error("[agent]\nseed_port = 51413\n"),
        "/etc/p2pu/site.toml:2: agent.seed_port = 51413: port 51413 is already used by transmission.peer_port (its default); give one of them another port"
    );
    // Both written: the later one is named, with the other as written.
    assert_eq!(
        error("[transmission]\nrpc_port = 7000\n[agent]\ntracker_port = 7000\n"),
        "/etc/p2pu/site.toml:4: agent.tracker_port = 7000: port 7000 is already used by transmission.rpc_port; give one of them another port"
    );
}

#[test]
fn zero_ports_are_refused_even_when_unused() {
    assert_eq!(
        error("[nat]\nport = 0\n"),
        "/etc/p2pu/site.toml:2: nat.port = 0: port 0 is not a usable port; use 1 to 65535"
    );
}

#[test]
fn a_missing_config_says_an_empty_file_is_valid_and_where_the_example_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    let msg = Config::load(&path, None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "config {} does not exist: create it (an empty file is valid: every key has a default; \
             the commented example is /usr/share/doc/p2pu/site.example.toml, install/site.example.toml \
             in the source tree) or name another file with --config or P2PU_CONFIG",
            path.display()
        )
    );
    std::fs::write(&path, "").unwrap();
    assert!(
        Config::load(&path, None).is_ok(),
        "an empty file is valid, as the message says"
    );
}

#[test]
fn the_example_path_in_messages_is_where_the_deb_installs_it() {
    let cargo = include_str!("../../Cargo.toml");
    let (dir, name) = EXAMPLE_CONFIG.rsplit_once('/').unwrap();
    assert_eq!(name, "site.example.toml");
    let asset = format!(
        "[\"install/site.example.toml\", \"{}/\", \"644\"]",
        &dir[1..]
    );
    assert!(
        cargo.contains(&asset),
        "Cargo.toml's deb assets lack {asset}"
    );
}

#[test]
fn an_unusable_hostname_asks_for_node_name() {
    let facts = MachineFacts {
        hostname: Some("bad host".into()),
        default_route_addr: None,
    };
    let msg = Config::from_str(Path::new("s.toml"), "", Some(&facts))
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "s.toml: node.name = \"bad host\": the machine's hostname is not a usable node name: set node.name to 1 to 64 letters, digits, `-`, `_` or `.`");
}

#[test]
fn bad_values_name_file_line_key_and_reason() {
    let cases = [
        ("[serf]\nbind = \"1.2.3.4\"\n", "/etc/p2pu/site.toml:2: serf.bind = \"1.2.3.4\": expected an address:port such as 0.0.0.0:7946"),
        ("[serf]\nbind = \"0.0.0.0:0\"\n", "/etc/p2pu/site.toml:2: serf.bind = \"0.0.0.0:0\": port 0 is not a usable port"),
        ("[serf]\nrpc_addr = \"0.0.0.0:7373\"\n", "/etc/p2pu/site.toml:2: serf.rpc_addr = \"0.0.0.0:7373\": must be a loopback address such as 127.0.0.1:7373: Serf's RPC is unencrypted"),
        ("[serf]\nadvertise = \"host\"\n", "/etc/p2pu/site.toml:2: serf.advertise = \"host\": expected an IP address"),
        ("\n[serf.tags]\np2pu-role = \"x\"\n", "/etc/p2pu/site.toml:3: serf.tags = \"p2pu-role\": tags starting with `p2pu` are set by p2pu itself"),
        ("[serf]\nuser_event_size_limit = 100\n", "/etc/p2pu/site.toml:2: serf.user_event_size_limit = 100: Serf accepts 512 to 9216"),
        ("[transmission]\nrpc_user = \"a:b\"\n", "/etc/p2pu/site.toml:2: transmission.rpc_user = \"a:b\": must be non-empty and contain no `:`"),
        ("[transmission.extra]\nrpc-port = 1\n", "/etc/p2pu/site.toml:2: transmission.extra = \"rpc-port\": settings.json key `rpc-port` is managed by p2pu; set transmission.rpc_port instead"),
        ("[transmission]\npeer_port = 7946\n", "/etc/p2pu/site.toml:2: transmission.peer_port = 7946: port 7946 is already used by serf.bind (its default); give one of them another port"),
        ("[agent]\nspool_dir = \"spool\"\n", "/etc/p2pu/site.toml:2: agent.spool_dir = \"spool\": must be an absolute path"),
        ("[agent]\nstate_dir = \"/var/../etc\"\n", "/etc/p2pu/site.toml:2: agent.state_dir = \"/var/../etc\": must not contain `..`"),
        ("[agent]\nserve_user = \"root\"\n", "/etc/p2pu/site.toml:2: agent.serve_user = \"root\": must be an unprivileged user: the tracker and web seed server face the network"),
        ("[agent]\nserve_user = \"P2PU; rm\"\n", "/etc/p2pu/site.toml:2: agent.serve_user = \"P2PU; rm\": expected a system user name: 1 to 32 of `a-z`, `0-9`, `_`, `-`, not starting with a digit or `-`"),
        ("[agent]\nfetch_min_rate_bytes_per_sec = 10\n", "/etc/p2pu/site.toml:2: agent.fetch_min_rate_bytes_per_sec = 10: use at least 1024: a slower floor lets a trickling member hold an update for days"),
        ("[agent]\nfetch_rate_window_secs = 0\n", "/etc/p2pu/site.toml:2: agent.fetch_rate_window_secs = 0: use 5 to 600: shorter windows punish a brief stall, longer ones let a trickle last"),
        ("[agent]\nfetch_slack_secs = 1\n", "/etc/p2pu/site.toml:2: agent.fetch_slack_secs = 1: use 60 to 604800: finding peers takes a minute or more"),
        ("[agent]\nretries = 101\n", "/etc/p2pu/site.toml:2: agent.retries = 101: use 0 to 100: a failure that 100 retries did not cure needs the operator"),
        ("[agent]\nretry_backoff_secs = 0\n", "/etc/p2pu/site.toml:2: agent.retry_backoff_secs = 0: use 1 to 86400"),
        ("[agent]\nretry_backoff_secs = 60\nretry_backoff_max_secs = 30\n", "/etc/p2pu/site.toml:3: agent.retry_backoff_max_secs = 30: use agent.retry_backoff_secs to 604800: the cap of the doubling wait"),
        ("[nat]\nenabled = true\n", "/etc/p2pu/site.toml:2: nat.enabled = true: needs nat.proxy (host:port of the rendezvous)"),
        ("[nat]\nproxy = \"example.org\"\n", "/etc/p2pu/site.toml:2: nat.proxy = \"example.org\": the port is missing; expected a host:port such as 10.0.0.1:3478 or proxy.example.org:3478"),
        ("[nat]\nkeepalive_secs = 30\n", "/etc/p2pu/site.toml:2: nat.keepalive_secs = 30: use 5 to 29: routers drop idle UDP mappings after 30 s"),
        ("[nat]\nstun_server = \"stun\"\n", "/etc/p2pu/site.toml:2: nat.stun_server = \"stun\": the port is missing; expected a host:port such as 10.0.0.1:3478 or proxy.example.org:3478"),
        ("[nat]\nkeepalive_secs = 20\npeer_expiry_secs = 30\n", "/etc/p2pu/site.toml:3: nat.peer_expiry_secs = 30: use at least twice nat.keepalive_secs: peers ping once per keepalive"),
        ("[nat]\nrelay_rate_kbps = 0\n", "/etc/p2pu/site.toml:2: nat.relay_rate_kbps = 0: must be positive: relayed sessions would carry no bytes"),
        ("[nat]\ncontrol_socket = \"run/c.sock\"\n", "/etc/p2pu/site.toml:2: nat.control_socket = \"run/c.sock\": must be an absolute path"),
        ("[time]\nntp = [\"\"]\n", "/etc/p2pu/site.toml:2: time.ntp = \"\": expected a host name or IP address such as ntp.example.org or 10.0.0.1"),
        ("[time]\nfallback_ntp = [\"10.0.0.300\"]\n", "/etc/p2pu/site.toml:2: time.fallback_ntp = \"10.0.0.300\": expected a host name or IP address such as ntp.example.org or 10.0.0.1"),
        ("[puppet]\ntimeout_secs = 0\n", "/etc/p2pu/site.toml:2: puppet.timeout_secs = 0: must be at least 1: every `puppet apply` would be killed at once"),
        ("[agent]\nmax_payload_bytes = 0\n", "/etc/p2pu/site.toml:2: agent.max_payload_bytes = 0: must be positive: every update would be refused"),
        ("[agent]\nfleet_id = \"XYZ\"\n", "/etc/p2pu/site.toml:2: agent.fleet_id = \"XYZ\": expected 16 lowercase hexadecimal digits (leave it out and init generates agent.fleet_id_file)"),
        ("[agent]\nthreshold = 7\n", "/etc/p2pu/site.toml:2: agent.threshold = 7: use 1 to 6: an announcement carries at most 6 signatures"),
        ("[agent]\nkey_threshold = 0\n", "/etc/p2pu/site.toml:2: agent.key_threshold = 0: use 1 to 6: an announcement carries at most 6 signatures"),
        ("[agent]\nheartbeat_interval_secs = 300\nheartbeat_window_secs = 300\n", "/etc/p2pu/site.toml:3: agent.heartbeat_window_secs = 300: use more than agent.heartbeat_interval_secs (300), say 3 times it: every node would go stale between two heartbeats"),
        ("[agent]\nannouncement_ttl_days = 0\n", "/etc/p2pu/site.toml:2: agent.announcement_ttl_days = 0: use 1 to 36500"),
        ("[agent]\nfleet_id_file = \"fleet.id\"\n", "/etc/p2pu/site.toml:2: agent.fleet_id_file = \"fleet.id\": must be an absolute path"),
        ("[agent]\nhealth_check = [\"check\", \"-q\"]\n", "/etc/p2pu/site.toml:2: agent.health_check = \"check\": the first word must be the check program's absolute path, such as /usr/local/bin/check (it runs as root, without a shell)"),
        ("[agent]\nhealth_check_timeout_secs = 0\n", "/etc/p2pu/site.toml:2: agent.health_check_timeout_secs = 0: use 1 to 3600: a longer check would hold every later update"),
        ("[agent]\napply_window = [\"Mon-Fri 02:00-04:00\", \"Funday 1:00-2:00\"]\n", "/etc/p2pu/site.toml:2: agent.apply_window = \"Funday 1:00-2:00\": \"Funday\" is not a day (Mon, Tue, ... Sun, or daily); write DAYS HH:MM-HH:MM in local time, such as \"Mon-Fri 02:00-04:00\", \"Sat,Sun 00:00-06:00\" or \"daily 22:30-01:00\""),
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
    assert_eq!(msg, "/etc/p2pu/site.toml:4: nat.port = 9091: port 9091 is already used by transmission.rpc_port (its default); give one of them another port");
}

#[test]
fn line_column_counts_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab", 99), (1, 3));
}

/// The striped transfer is opt-in: the chain stays the default, and a misspelt mode is an
/// error rather than a silent chain.
#[test]
fn the_transfer_mode_defaults_to_the_chain_and_refuses_unknown_modes() {
    assert_eq!(load("").unwrap().site.transfer.mode, TransferMode::Chain);
    let config = load("[transfer]\nmode = \"stripes\"\n").unwrap();
    assert_eq!(config.site.transfer.mode, TransferMode::Stripes);
    assert!(error("[transfer]\nmode = \"stripe\"\n").contains("unknown variant"));
}

/// The stripes' shape is the site's (issue 24): defaults 8 and 8, and a value no roster or
/// seed server holds is refused with its file and line.
#[test]
fn the_stripes_and_fan_out_default_to_eight_and_refuse_what_no_seed_server_holds() {
    let transfer = load("").unwrap().site.transfer;
    assert_eq!((transfer.stripes, transfer.fan_out), (8, 8));
    let transfer = load("[transfer]\nstripes = 16\nfan_out = 4\n")
        .unwrap()
        .site
        .transfer;
    assert_eq!((transfer.stripes, transfer.fan_out), (16, 4));
    assert_eq!(
        error("[transfer]\nmode = \"stripes\"\nstripes = 0\n"),
        "/etc/p2pu/site.toml:3: transfer.stripes = 0: expected 1 to 64"
    );
    assert_eq!(
        error("[transfer]\nstripes = 65\n"),
        "/etc/p2pu/site.toml:2: transfer.stripes = 65: expected 1 to 64"
    );
    for bad in ["1", "33", "100000"] {
        let msg = error(&format!("[transfer]\nfan_out = {bad}\n"));
        assert_eq!(
            msg,
            format!("/etc/p2pu/site.toml:2: transfer.fan_out = {bad}: expected 2 to 32 (each member's seed server holds that many streams of a stripe)")
        );
    }
    assert!(error("[transfer]\nfan_out = -1\n").contains("transfer.fan_out"));
}

/// Serf refuses a member's tags past 512 bytes, and the agent adds `p2pu-rate` after start:
/// the operator's tags must leave p2pu's own room, or setting the measured rate would fail on
/// every node at once.
#[test]
fn operator_tags_leave_room_for_the_tags_p2pu_sets() {
    assert!(load("[serf.tags]\nrack = \"r1\"\n").is_ok());
    let big = format!("[serf.tags]\nnote = \"{}\"\n", "x".repeat(420));
    let msg = error(&big);
    assert!(
        msg.contains("serf.tags") && msg.contains("512 bytes"),
        "{msg}"
    );
    let fits = format!("[serf.tags]\nnote = \"{}\"\n", "x".repeat(300));
    assert!(load(&fits).is_ok());
}
