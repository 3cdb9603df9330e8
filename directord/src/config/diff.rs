//! What a new config would change, in the operator's words: `directorctl reload
//! --dry-run` prints it, and a reload logs it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::Serialize;

use super::{Config, Service};

/// One line per change; empty when nothing changed. Sections that need a restart
/// are listed too (a reload refuses them).
pub fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, changed) in [
        ("[node]", old.node != new.node),
        ("[failover]", old.failover != new.failover),
        ("[control]", old.control != new.control),
        ("[metrics]", old.metrics != new.metrics),
    ] {
        if changed {
            out.push(format!(
                "{name} changed (needs a restart of directord; reload refuses it)"
            ));
        }
    }
    let vip = |v: &super::Vip| format!("{}/{} on {}", v.address, v.prefix_len, v.interface);
    let old_vips: Vec<String> = old.vips.iter().map(vip).collect();
    let new_vips: Vec<String> = new.vips.iter().map(vip).collect();
    for v in new_vips.iter().filter(|v| !old_vips.contains(v)) {
        out.push(format!("VIP {v} added"));
    }
    for v in old_vips.iter().filter(|v| !new_vips.contains(v)) {
        out.push(format!("VIP {v} removed"));
    }
    if old.announce != new.announce {
        out.push(format!(
            "[announce] {}",
            fields(&old.announce, &new.announce)
        ));
    }
    if old.ipvs != new.ipvs {
        out.push(format!("[ipvs] {}", fields(&old.ipvs, &new.ipvs)));
    }
    if old.alerts != new.alerts {
        out.push(format!("[alerts] {}", fields(&old.alerts, &new.alerts)));
    }
    let olds: BTreeMap<&str, &Service> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let news: BTreeMap<&str, &Service> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, s) in &news {
        match olds.get(name) {
            None => out.push(format!(
                "service {name} added ({} real server(s){})",
                s.reals.len(),
                s.check
                    .as_ref()
                    .map_or(String::new(), |c| format!(", {} check", c.protocol.name()))
            )),
            Some(o) if o != s => service(&mut out, o, s),
            Some(_) => {}
        }
    }
    for name in olds.keys().filter(|n| !news.contains_key(*n)) {
        out.push(format!("service {name} removed"));
    }
    out
}

fn service(out: &mut Vec<String>, old: &Service, new: &Service) {
    let name = &new.name;
    let mut o = serde_json::to_value(old).unwrap_or_default();
    let mut n = serde_json::to_value(new).unwrap_or_default();
    // Real servers and the check are told apart below.
    for v in [&mut o, &mut n] {
        if let Some(m) = v.as_object_mut() {
            m.remove("reals");
            m.remove("check");
        }
    }
    if o != n {
        out.push(format!("service {name}: {}", json_fields(&o, &n)));
    }
    for r in &new.reals {
        match old.reals.iter().find(|x| x.address == r.address) {
            None => out.push(format!(
                "service {name}: real server {} added (weight {})",
                r.address, r.weight
            )),
            Some(x) if x.weight != r.weight => out.push(format!(
                "service {name}: real server {} weight {} -> {}",
                r.address, x.weight, r.weight
            )),
            Some(_) => {}
        }
    }
    for r in old
        .reals
        .iter()
        .filter(|r| !new.reals.iter().any(|x| x.address == r.address))
    {
        out.push(format!("service {name}: real server {} removed", r.address));
    }
    match (&old.check, &new.check) {
        (None, Some(c)) => out.push(format!("service {name}: {} check added", c.protocol.name())),
        (Some(_), None) => out.push(format!(
            "service {name}: check removed (real servers count as up)"
        )),
        (Some(a), Some(b)) if a != b => out.push(format!(
            "service {name}: check {} (its real servers start over at `initial`)",
            fields(a, b)
        )),
        _ => {}
    }
}

/// "a: x -> y, b: ..." over the changed top-level fields (secrets stay hidden:
/// they serialize as `<secret>`).
fn fields<T: Serialize + Debug>(old: &T, new: &T) -> String {
    let o = serde_json::to_value(old).unwrap_or_default();
    let n = serde_json::to_value(new).unwrap_or_default();
    json_fields(&o, &n)
}

fn json_fields(o: &serde_json::Value, n: &serde_json::Value) -> String {
    let (Some(om), Some(nm)) = (o.as_object(), n.as_object()) else {
        return format!("{o} -> {n}");
    };
    let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    let parts: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (om.get(k).unwrap_or(&null), nm.get(k).unwrap_or(&null));
            (a != b).then(|| format!("{k}: {} -> {}", short(a), short(b)))
        })
        .collect();
    if parts.is_empty() {
        "changed".to_string()
    } else {
        parts.join(", ")
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        // A Duration, as serde writes it.
        serde_json::Value::Object(m)
            if m.len() == 2 && m.contains_key("secs") && m.contains_key("nanos") =>
        {
            let secs = m["secs"].as_u64().unwrap_or(0);
            let nanos = m["nanos"].as_u64().unwrap_or(0);
            if nanos.is_multiple_of(1_000_000) && (nanos > 0 || secs == 0) {
                format!("{}ms", secs * 1000 + nanos / 1_000_000)
            } else {
                format!("{}s", secs as f64 + nanos as f64 / 1e9)
            }
        }
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}
