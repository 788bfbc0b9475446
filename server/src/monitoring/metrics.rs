//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Written by hand rather than with `prometheus-client`: every value is read at scrape time
//! from the bus and the OPC UA server, so a registry of metric objects would only be copied
//! into once per scrape; the format itself is a few lines of text.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use fabrique_adapters::{TagId, Value};
use opcua::types::VariableId;

use super::{process, Monitoring};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(monitoring): State<Monitoring>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], monitoring.render())
}

/// One metric family at a time: `# HELP`, `# TYPE`, then its samples.
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `RequestsFailed` → `requests_failed`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    out
}

impl Monitoring {
    fn number(&self, tag: Option<TagId>) -> Option<f64> {
        let value = self.inner.bus.latest(tag?).value?;
        match value {
            Value::Text(_) | Value::Time(_) => None,
            other => other.as_f64(),
        }
    }

    fn render(&self) -> String {
        let inner = &self.inner;
        let mut out = Exposition {
            text: String::with_capacity(4096),
        };
        let bus = inner.bus.counters();
        let load =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;

        out.family(
            "fabrique_bus_changes_total",
            "counter",
            "Tag changes accepted onto the point bus.",
        );
        out.sample("fabrique_bus_changes_total", &[], load(&bus.changes));
        out.family(
            "fabrique_bus_changes_per_second",
            "gauge",
            "Tag changes accepted onto the point bus during the last second.",
        );
        out.sample(
            "fabrique_bus_changes_per_second",
            &[],
            load(&inner.changes_per_second),
        );
        out.family(
            "fabrique_bus_lagged_batches_total",
            "counter",
            "Batches a slow bus consumer missed and resynchronised from the latest values.",
        );
        out.sample(
            "fabrique_bus_lagged_batches_total",
            &[],
            load(&bus.lagged_batches),
        );
        out.family("fabrique_tags", "gauge", "Tags served by the gateway.");
        out.sample("fabrique_tags", &[], inner.bus.catalog().len() as f64);

        self.render_devices(&mut out);
        self.render_sinks(&mut out);
        self.render_opcua(&mut out);

        out.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the gateway process.",
        );
        if let Some(bytes) = process::resident_memory_bytes() {
            out.sample("process_resident_memory_bytes", &[], bytes as f64);
        }
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the gateway process.",
        );
        if let Some(seconds) = process::cpu_seconds() {
            out.sample("process_cpu_seconds_total", &[], seconds);
        }
        out.family(
            "fabrique_uptime_seconds",
            "gauge",
            "Seconds since the gateway started.",
        );
        out.sample(
            "fabrique_uptime_seconds",
            &[],
            inner.started.elapsed().as_secs_f64(),
        );
        out.text
    }

    fn render_devices(&self, out: &mut Exposition) {
        let devices = self.devices();
        type Pick = fn(&super::DeviceProbe) -> Option<TagId>;
        let families: [(&str, &str, &str, Pick); 4] = [
            (
                "fabrique_device_connected",
                "gauge",
                "1 while the gateway talks to the device.",
                |d| Some(d.connected),
            ),
            (
                "fabrique_device_reconnects_total",
                "counter",
                "Times the device came back after being lost.",
                |d| d.reconnects,
            ),
            (
                "fabrique_device_requests_ok_total",
                "counter",
                "Requests to the device that succeeded.",
                |d| d.requests_ok,
            ),
            (
                "fabrique_device_requests_failed_total",
                "counter",
                "Requests to the device that failed.",
                |d| d.requests_failed,
            ),
        ];
        for (name, kind, help, pick) in families {
            out.family(name, kind, help);
            for device in devices.iter() {
                if let Some(value) = self.number(pick(device)) {
                    let labels = [
                        ("station", device.station.as_str()),
                        ("device", device.device.as_str()),
                        ("protocol", device.protocol.as_str()),
                    ];
                    out.sample(name, &labels, value);
                }
            }
        }
    }

    /// Every numeric sink counter on the bus becomes `fabrique_sink_<counter>`: `Buffered` and
    /// `BufferedOnDisk` and `Connected` are gauges, the others only grow and are counters.
    fn render_sinks(&self, out: &mut Exposition) {
        let mut names: Vec<&str> = Vec::new();
        for sink in &self.inner.sinks {
            for (counter, _) in &sink.counters {
                if !names.contains(&counter.as_str()) {
                    names.push(counter);
                }
            }
        }
        for counter in names {
            let gauge = matches!(counter, "Buffered" | "BufferedOnDisk" | "Connected");
            let samples: Vec<(&str, f64)> = self
                .inner
                .sinks
                .iter()
                .filter_map(|sink| {
                    let tag = sink.counters.iter().find(|(n, _)| n == counter)?.1;
                    Some((sink.name.as_str(), self.number(Some(tag))?))
                })
                .collect();
            if samples.is_empty() {
                continue; // a text counter such as LastError
            }
            let base = format!("fabrique_sink_{}", snake_case(counter));
            let name = if gauge { base } else { format!("{base}_total") };
            let help = format!("`Diagnostics/Sinks/<sink>/{counter}` of every sink.");
            out.family(&name, if gauge { "gauge" } else { "counter" }, &help);
            for (sink, value) in samples {
                out.sample(&name, &[("sink", sink)], value);
            }
        }
    }

    fn render_opcua(&self, out: &mut Exposition) {
        let summary = self.inner.opcua.info().summary();
        let read = |id: VariableId| -> Option<f64> {
            let value = summary.get(id)?.value?;
            match value {
                opcua::types::Variant::UInt32(n) => Some(n as f64),
                _ => None,
            }
        };
        let families = [
            (
                "fabrique_opcua_sessions",
                "gauge",
                "OPC UA sessions open now.",
                VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount,
            ),
            (
                "fabrique_opcua_sessions_created_total",
                "counter",
                "OPC UA sessions created since start.",
                VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CumulatedSessionCount,
            ),
            (
                "fabrique_opcua_subscriptions",
                "gauge",
                "OPC UA subscriptions alive now.",
                VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount,
            ),
            (
                "fabrique_opcua_rejected_sessions_total",
                "counter",
                "OPC UA sessions refused since start (too many sessions, bad identity, untrusted certificate...).",
                VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_RejectedSessionCount,
            ),
            (
                "fabrique_opcua_security_rejected_sessions_total",
                "counter",
                "OPC UA sessions refused since start for a security reason (identity, certificate, signature).",
                VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_SecurityRejectedSessionCount,
            ),
        ];
        for (name, kind, help, id) in families {
            out.family(name, kind, help);
            if let Some(value) = read(id) {
                out.sample(name, &[], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_become_snake_case() {
        assert_eq!(snake_case("RequestsFailed"), "requests_failed");
        assert_eq!(snake_case("Sent"), "sent");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition {
            text: String::new(),
        };
        out.sample("m", &[("device", "a\"b\\c\nd")], 1.5);
        assert_eq!(out.text, "m{device=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
