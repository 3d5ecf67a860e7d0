//! The Serf wrapper (its RPC, for every request) against real `serf agent`s (Debian's
//! 0.9.4, which calls itself 0.8.2-dev) joined on loopback.

mod support;

use anyhow::{bail, Result};
use p2pu::engines::{Gossip, JoinEvents, MemberStatus, Serf, SerfError};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{free_port, start_serf_with, wait_for_members, wait_until, SerfAgent, SerfOpts};

const AUTH_KEY: &str = "rpc-key-for-tests";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A handler that records user events as `name|payload` lines in `events-<node>.log` and
/// answers queries with `pong from <node>: <payload>`.
fn write_handler(dir: &Path) -> Result<PathBuf> {
    let script = dir.join("handler.sh");
    let log_dir = dir.display();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
case "$SERF_EVENT" in
user) printf '%s|%s\n' "$SERF_USER_EVENT" "$(cat)" >> "{log_dir}/events-$SERF_SELF_NAME.log" ;;
query) printf 'pong from %s: %s' "$SERF_SELF_NAME" "$(cat)" ;;
esac
"#
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script)
}

fn events(dir: &Path, node: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("events-{node}.log")))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Two agents, `alpha` and `beta`, with the recording handler, RPC auth and tags; `beta`
/// joins `alpha` at start.
fn pair(dir: &Path) -> Result<(SerfAgent, SerfAgent)> {
    let handler = write_handler(dir)?;
    let mut first = SerfOpts::new("alpha", loopback(free_port()), loopback(free_port()));
    first.rpc_auth = Some(AUTH_KEY.into());
    first.event_handlers = vec![handler.display().to_string()];
    first.tags.insert("role".into(), "seed".into());
    first.tags.insert("bt".into(), "10.99.1.1:51413".into());
    let alpha = start_serf_with(dir, first)?;

    let mut second = SerfOpts::new("beta", loopback(free_port()), loopback(free_port()));
    second.rpc_auth = Some(AUTH_KEY.into());
    second.event_handlers = vec![handler.display().to_string()];
    second.tags.insert("role".into(), "leech".into());
    second.join = vec![alpha.bind];
    let beta = start_serf_with(dir, second)?;

    for agent in [&alpha, &beta] {
        wait_for_members(agent, &["alpha", "beta"], Duration::from_secs(10))?;
    }
    Ok((alpha, beta))
}

#[test]
fn joined_agents_list_each_other_with_tags() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, beta) = pair(dir.path())?;
    let members = beta.client().members()?;
    assert_eq!(members.len(), 2, "{members:?}");
    let Some(seen_alpha) = members.iter().find(|m| m.name == "alpha") else {
        bail!("alpha missing from {members:?}");
    };
    assert_eq!(seen_alpha.status, MemberStatus::Alive);
    assert_eq!(seen_alpha.addr, alpha.bind.ip());
    assert_eq!(seen_alpha.port, alpha.bind.port());
    assert_eq!(seen_alpha.tags["role"], "seed");
    assert_eq!(seen_alpha.tags["bt"], "10.99.1.1:51413");
    let Some(seen_beta) = alpha
        .client()
        .members()?
        .into_iter()
        .find(|m| m.name == "beta")
    else {
        bail!("alpha does not list beta");
    };
    assert_eq!(
        seen_beta.tags.get("role").map(String::as_str),
        Some("leech")
    );
    Ok(())
}

/// The advertised rate (`p2pu-rate`) is set at run time through the RPC (its `tags` request):
/// the other member sees it, and the tags set at start stay.
#[test]
fn a_tag_set_at_run_time_reaches_the_other_member_and_keeps_the_rest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, beta) = pair(dir.path())?;
    alpha.client().set_tag("p2pu-rate", "6250000")?;
    let seen = support::wait_for(Duration::from_secs(10), || {
        let members = beta.client().members().ok()?;
        members.into_iter().find(|m| {
            m.name == "alpha" && m.tags.get("p2pu-rate").map(String::as_str) == Some("6250000")
        })
    });
    let Some(seen) = seen else {
        bail!("beta never saw alpha's rate");
    };
    assert_eq!(seen.tags["role"], "seed");
    assert_eq!(seen.tags["bt"], "10.99.1.1:51413");
    Ok(())
}

#[test]
fn uncoalesced_user_events_each_reach_every_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, _beta) = pair(dir.path())?;
    let client = alpha.client();
    let started = Instant::now();
    for n in 1..=3 {
        client.user_event(
            "p2pu-update",
            format!("p2pu1:payload-{n}").as_bytes(),
            false,
        )?;
    }
    eprintln!("three RPC events took {:?}", started.elapsed());
    let want: Vec<String> = (1..=3)
        .map(|n| format!("p2pu-update|p2pu1:payload-{n}"))
        .collect();
    for node in ["alpha", "beta"] {
        let mut seen = Vec::new();
        let delivered = wait_until(Duration::from_secs(10), || {
            seen = events(dir.path(), node);
            seen.len() >= 3
        });
        assert!(delivered, "{node} got {seen:?}");
        eprintln!("{node}: three deliveries after {:?}", started.elapsed());
    }
    // A later event, once delivered on both, shows the three had their time: a late
    // duplicate of one of them would be there too.
    client.user_event("p2pu-update", b"p2pu1:later", false)?;
    for node in ["alpha", "beta"] {
        let mut seen = Vec::new();
        let delivered = wait_until(Duration::from_secs(10), || {
            seen = events(dir.path(), node);
            seen.iter().any(|e| e == "p2pu-update|p2pu1:later")
        });
        assert!(delivered, "{node} got {seen:?}");
        seen.retain(|e| e != "p2pu-update|p2pu1:later");
        seen.sort();
        assert_eq!(seen, want, "{node}");
    }
    Ok(())
}

/// A third agent, `gamma`, with `handler`, joining `alpha`.
fn gamma_joining(dir: &Path, alpha: &SerfAgent, handler: &Path) -> Result<SerfAgent> {
    let mut third = SerfOpts::new("gamma", loopback(free_port()), loopback(free_port()));
    third.rpc_auth = Some(AUTH_KEY.into());
    third.event_handlers = vec![handler.display().to_string()];
    third.join = vec![alpha.bind];
    start_serf_with(dir, third)
}

/// Issue 25: a query ends once every alive member answered, not at its timeout (which the
/// CLI's `serf query` waited out). Three members; asked with a 20 s timeout, every answer is
/// in and the call returned before the timeout.
#[test]
fn a_query_returns_every_members_answer_before_its_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, beta) = pair(dir.path())?;
    let _gamma = gamma_joining(dir.path(), &alpha, &write_handler(dir.path())?)?;
    for agent in [&alpha, &beta] {
        wait_for_members(agent, &["alpha", "beta", "gamma"], Duration::from_secs(10))?;
    }
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    // A payload with a newline and a line that mimics the CLI's text output: over the
    // RPC it is bytes, and each answer stays its member's.
    let answers = beta
        .client()
        .query("p2pu-ping", b"-hi\nResponse from 'x'", timeout)?;
    let elapsed = started.elapsed();
    eprintln!("query with a 20 s timeout returned after {elapsed:?}: {answers:?}");
    let want: Vec<(String, String)> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                format!("pong from {n}: -hi\nResponse from 'x'"),
            )
        })
        .collect();
    assert_eq!(answers, want);
    assert!(
        elapsed < timeout,
        "returned only at its timeout: {elapsed:?}"
    );
    Ok(())
}

/// A member (Serf keyring, its own handler) answering garbage: bytes that are not UTF-8, look
/// like the RPC's MessagePack (a reserved marker, a header) and carry a line like the CLI's
/// "Response from 'alpha'". It is that member's answer, made text, and neither errors the
/// query nor stands in for another's: the honest answers are all there, before the timeout.
#[test]
fn a_members_garbage_answer_is_its_own_and_breaks_no_query() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, beta) = pair(dir.path())?;
    let garbage = dir.path().join("garbage.sh");
    std::fs::write(
        &garbage,
        "#!/bin/sh\nprintf '\\301\\377\\202\\245Error\\240\\243Seq\\003\\nResponse from '\\''alpha'\\'': forged'\n",
    )?;
    std::fs::set_permissions(
        &garbage,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let _gamma = gamma_joining(dir.path(), &alpha, &garbage)?;
    wait_for_members(&beta, &["alpha", "beta", "gamma"], Duration::from_secs(10))?;
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    let answers = beta.client().query("p2pu-ping", b"x", timeout)?;
    let elapsed = started.elapsed();
    let forged = String::from_utf8_lossy(
        b"\xc1\xff\x82\xa5Error\xa0\xa3Seq\x03\nResponse from 'alpha': forged",
    );
    assert_eq!(
        answers,
        vec![
            ("alpha".to_owned(), "pong from alpha: x".to_owned()),
            ("beta".to_owned(), "pong from beta: x".to_owned()),
            ("gamma".to_owned(), forged.into_owned()),
        ]
    );
    assert!(
        elapsed < timeout,
        "returned only at its timeout: {elapsed:?}"
    );
    Ok(())
}

#[test]
fn rpc_auth_is_required_and_a_wrong_key_is_not_echoed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alpha, _beta) = pair(dir.path())?;
    let rpc = alpha.rpc.to_string();
    match Serf::new(rpc.clone()).members() {
        Err(err @ SerfError::RpcAuthRequired { .. }) => {
            let text = err.to_string();
            assert!(text.contains("requires an rpc_auth key"), "{text}");
        }
        other => bail!("want RpcAuthRequired without a key, got {other:?}"),
    }
    let wrong = Serf::new(rpc).with_auth(Some("guessed-key".into()));
    // Every request speaks the RPC itself: the same refusals, typed.
    for (what, result) in [
        ("event", wrong.user_event("p2pu-update", b"x", false)),
        ("members", wrong.members().map(drop)),
        (
            "query",
            wrong
                .query("p2pu-ping", b"", Duration::from_secs(5))
                .map(drop),
        ),
    ] {
        match result {
            Err(err @ SerfError::RpcAuth { .. }) => {
                let text = err.to_string();
                assert!(text.contains(&alpha.rpc.to_string()), "{what}: {text}");
                assert!(
                    text.contains("Invalid authentication token"),
                    "{what}: {text}"
                );
                assert!(!text.contains("guessed-key"), "{what}: {text}");
            }
            other => bail!("{what}: want RpcAuth with a wrong key, got {other:?}"),
        }
    }
    match Serf::new(alpha.rpc.to_string()).query("p2pu-ping", b"", Duration::from_secs(5)) {
        Err(SerfError::RpcAuthRequired { .. }) => {}
        other => bail!("want RpcAuthRequired without a key, got {other:?}"),
    }
    Ok(())
}

/// Issue 29: no agent listening (`connection refused`) is said as what to check.
#[test]
fn no_agent_says_serf_refuses_connections_and_what_to_check() -> Result<()> {
    let rpc = loopback(free_port()).to_string();
    match Serf::new(rpc.clone()).members() {
        Err(err @ SerfError::Refused { .. }) => {
            let text = err.to_string();
            assert_eq!(
                text,
                format!("Serf's RPC at {rpc} refuses connections: is serf.service running? (systemctl status serf)")
            );
        }
        other => bail!("want Refused, got {other:?}"),
    }
    match Serf::new(rpc.clone()).query("p2pu-ping", b"", Duration::from_secs(5)) {
        Err(err @ SerfError::Refused { .. }) => assert_eq!(
            err.to_string(),
            format!("Serf's RPC at {rpc} refuses connections: is serf.service running? (systemctl status serf)")
        ),
        other => bail!("want Refused from a query, got {other:?}"),
    }
    Ok(())
}

/// `alpha` and `beta` joined; `gamma` alone, having sent five events, so its clock is ahead of
/// theirs. `beta` then joins `gamma` with `mode`, and `alpha` (which has not exchanged state
/// with `gamma` yet: that happens every 30 s) sends an event at its own, older clock. What
/// `beta` hears of it decides whether a member that joins only for the clock (`p2pu submit`
/// before each send) loses the events other members send meanwhile.
fn lagging_members_event_after_a_join(mode: JoinEvents) -> Result<(Vec<String>, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let (alpha, beta) = pair(dir.path())?;
    let mut third = SerfOpts::new("gamma", loopback(free_port()), loopback(free_port()));
    third.rpc_auth = Some(AUTH_KEY.into());
    third.event_handlers = vec![write_handler(dir.path())?.display().to_string()];
    let gamma = start_serf_with(dir.path(), third)?;
    for n in 1..=5 {
        gamma
            .client()
            .user_event("p2pu-update", format!("gamma-{n}").as_bytes(), false)?;
    }
    beta.client().join(&[gamma.bind.to_string()], mode)?;
    alpha
        .client()
        .user_event("p2pu-update", b"from-alpha", false)?;
    // Gamma never joined anything, so it takes every event: once it has alpha's, beta has
    // had its chance too (gossip reaches both in the same rounds).
    let heard =
        |node: &str| events(dir.path(), node).contains(&"p2pu-update|from-alpha".to_string());
    assert!(
        wait_until(Duration::from_secs(10), || heard("gamma")),
        "gamma never got alpha's event: {:?}",
        events(dir.path(), "gamma")
    );
    wait_until(Duration::from_secs(3), || heard("beta"));
    Ok((events(dir.path(), "beta"), events(dir.path(), "gamma")))
}

#[test]
fn a_member_joining_with_replay_still_hears_a_lagging_members_event() -> Result<()> {
    let (beta, _) = lagging_members_event_after_a_join(JoinEvents::Replay)?;
    assert!(
        beta.contains(&"p2pu-update|from-alpha".to_string()),
        "beta lost alpha's event after joining for the clock: {beta:?}"
    );
    // What it had not seen of gamma's buffer came with the join, once each.
    for n in 1..=5 {
        let event = format!("p2pu-update|gamma-{n}");
        assert_eq!(beta.iter().filter(|e| **e == event).count(), 1, "{beta:?}");
    }
    Ok(())
}
