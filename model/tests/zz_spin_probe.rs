use model::*;
#[test]
fn probe() {
    let cfg = Config::new(Protocol::Ours, false, true).actor(Actor::UffdCopy{slot:1}).actor(Actor::GuardInstall{slot:1}).actor(Actor::PtReclaim);
    if let Some(m) = find_violation(cfg) { println!("{m}"); panic!() }
}
