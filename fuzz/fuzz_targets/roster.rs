//! Fuzzes the roster decoder (`formats::roster`), which reads what any member serves as
//! `<info-hash>.roster`: it must never panic; what it accepts re-encodes to exactly the bytes
//! it was given, and the plan built from it places every member.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::transfer::topology::Plan;
use p2pu::formats::roster::Roster;

fuzz_target!(|data: &[u8]| {
    let Ok(roster) = Roster::decode(data) else {
        return;
    };
    assert_eq!(roster.encode(), data);
    let plan = Plan::from_roster(&[1; 20], &roster).expect("a valid roster makes a plan");
    assert_eq!(plan.names(), roster.members.as_slice());
});
