//! Fuzzes the rollout plan decoder: it must never panic; whatever it accepts must re-encode
//! to exactly the bytes it was given (one plan, one encoding), and its waves must cover every
//! member once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::plan::{assign_waves, Plan};

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = Plan::decode(data) else {
        return;
    };
    assert_eq!(plan.to_bencode(), data);
    if let Some(target) = &plan.target {
        let text = target.to_text();
        assert_eq!(p2pu_formats::plan::Selector::parse(&text).unwrap().to_text(), text);
    }
    let members: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
    let waves = assign_waves(&[1; 20], &members, &plan.waves);
    assert_eq!(waves.concat().len(), members.len());
});
