//! From the ruleset the kernel holds to the next one, changing only what differs (as
//! kube-proxy's nftables mode does after its first sync): the table, its base chains and
//! every untouched service chain, map element and affinity set stay, so ClientIP
//! affinity and the counters survive changes to other Services. Pure; one transaction.

use super::rules::{Ruleset, MAPS};
use std::collections::HashMap;
use std::fmt::Write;

/// The `nft -f` script turning `old` into `new`, or None when they are the same.
pub fn diff(old: &Ruleset, new: &Ruleset) -> Option<String> {
    if old == new {
        return None;
    }
    let old_sets: HashMap<&str, &str> = old.sets.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    // A set cannot be changed in place; such rare changes (a new affinity timeout) or a
    // different base rebuild the table.
    let redefined = new.sets.iter().any(|(n, d)| old_sets.get(n.as_str()).is_some_and(|o| *o != d));
    if old.table != new.table || old.base != new.base || old.maps.len() != new.maps.len() || redefined {
        return Some(new.full());
    }
    let t = &new.table;
    let mut out = String::new();
    let new_sets: HashMap<&str, &str> = new.sets.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    let old_chains: HashMap<&str, &Vec<String>> = old.chains.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let new_chains: HashMap<&str, &Vec<String>> = new.chains.iter().map(|(n, r)| (n.as_str(), r)).collect();
    // What new rules refer to exists before any rule is written.
    for (name, def) in new.sets.iter().filter(|(n, _)| !old_sets.contains_key(n.as_str())) {
        let _ = writeln!(out, "add set ip {t} {name} {{ {def} }}");
    }
    for (name, _) in new.chains.iter().filter(|(n, _)| !old_chains.contains_key(n.as_str())) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    for (name, rules) in &new.chains {
        match old_chains.get(name.as_str()) {
            Some(was) if *was == rules => continue,
            Some(_) => {
                let _ = writeln!(out, "flush chain ip {t} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(out, "add rule ip {t} {name} {r}");
        }
    }
    for (((map, _), was), now) in MAPS.iter().zip(&old.maps).zip(&new.maps) {
        for (k, v) in was {
            if now.get(k) != Some(v) {
                let _ = writeln!(out, "delete element ip {t} {map} {{ {k} }}");
            }
        }
        for (k, v) in now {
            if was.get(k) != Some(v) {
                let _ = writeln!(out, "add element ip {t} {map} {{ {k} : {v} }}");
            }
        }
    }
    // Chains going may jump to one another: emptied first, then deleted.
    let gone: Vec<&str> = old.chains.iter().map(|(n, _)| n.as_str()).filter(|n| !new_chains.contains_key(n)).collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain ip {t} {name}");
    }
    for (name, _) in old.sets.iter().filter(|(n, _)| !new_sets.contains_key(n.as_str())) {
        let _ = writeln!(out, "delete set ip {t} {name}");
    }
    Some(out)
}
