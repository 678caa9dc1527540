//! GPU discovery and telemetry for a node: what GPUs this machine really
//! has (through NVML, when the NVIDIA library is there), how they are doing,
//! and how that compares with what the cluster config declares.
//!
//! The scheduler admits jobs by the config's GPUs (`topology::Gpu`), so the
//! config stays the source of truth for *which* GPUs exist; NVML only checks
//! it (a card with less memory than declared would get jobs that cannot
//! fit) and adds live telemetry. Without NVML — a laptop, CI, a driver that
//! is not loaded — the node runs on the declared GPUs alone and says so in
//! one log line ([`GpuProbe::describe`]).
//!
//! `nvml-wrapper` loads `libnvidia-ml` at run time, so this builds and runs
//! everywhere; the health rule ([`health`]) is a pure function so that it is
//! tested without hardware.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use topology::{NodeId, Topology, GIB};

/// A GPU at or above this temperature is reported unhealthy: NVIDIA
/// data-centre cards start throttling in the high 80s, so a job placed there
/// runs slower than its modelled duration.
pub const DEFAULT_OVERHEAT_C: u32 = 90;

/// How far NVML's total memory may be from the declared one before it is
/// worth a warning. NVML's total leaves out what the driver reserves, and
/// "24 GB" cards hold less than 24 GiB, so a few percent are normal.
const MEMORY_TOLERANCE_PERCENT: u64 = 5;

/// One GPU as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuTelemetry {
    /// NVML's device index; for a declared GPU, its position among the
    /// node's GPUs in the config (the two are matched by this index).
    pub index: u32,
    pub name: String,
    /// NVML's UUID (`GPU-…`); empty for a GPU known only from the config.
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_percent: u32,
    pub temperature_c: u32,
    /// `None` where the device cannot report its power draw.
    pub power_milliwatts: Option<u32>,
    pub healthy: bool,
    /// Why the GPU is unhealthy; `None` when healthy.
    pub reason: Option<String>,
}

/// Where the node's GPU list comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSource {
    Nvml {
        driver_version: String,
        devices: usize,
    },
    /// No NVML: the config's GPUs are taken as they are declared.
    Declared { why: String },
}

/// The raw answers of NVML's queries for one device, before the health
/// rule: an `Err` holds the query's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readings {
    pub index: u32,
    pub name: Result<String, String>,
    pub uuid: Result<String, String>,
    /// `(total, used)` bytes.
    pub memory: Result<(u64, u64), String>,
    pub utilization_percent: Result<u32, String>,
    pub temperature_c: Result<u32, String>,
    /// Not part of the health rule: many devices cannot report it.
    pub power_milliwatts: Option<u32>,
}

impl Readings {
    /// A device that could not even be opened: every query failed with `why`.
    fn unreadable(index: u32, why: String) -> Readings {
        Readings {
            index,
            name: Err(why.clone()),
            uuid: Err(why.clone()),
            memory: Err(why.clone()),
            utilization_percent: Err(why.clone()),
            temperature_c: Err(why),
            power_milliwatts: None,
        }
    }
}

/// The health rule: a device is unhealthy when a query fails (a GPU fallen
/// off the bus answers nothing), when it reports no memory, or when it is at
/// or above `overheat_c`. The reason lists every problem found.
pub fn health(r: &Readings, overheat_c: u32) -> (bool, Option<String>) {
    let mut failed = Vec::new();
    let mut note = |what: &str, res: Result<(), &String>| {
        if let Err(e) = res {
            failed.push(format!("{what}: {e}"));
        }
    };
    note("name", r.name.as_ref().map(|_| ()));
    note("uuid", r.uuid.as_ref().map(|_| ()));
    note("memory", r.memory.as_ref().map(|_| ()));
    note("utilization", r.utilization_percent.as_ref().map(|_| ()));
    note("temperature", r.temperature_c.as_ref().map(|_| ()));
    let mut problems = Vec::new();
    if !failed.is_empty() {
        problems.push(format!("NVML queries failed ({})", failed.join("; ")));
    }
    if let Ok((0, _)) = r.memory {
        problems.push("reports 0 bytes of memory".to_string());
    }
    if let Ok(t) = r.temperature_c {
        if t >= overheat_c {
            problems.push(format!(
                "temperature {t} °C is at or above the overheat threshold {overheat_c} °C"
            ));
        }
    }
    if problems.is_empty() {
        (true, None)
    } else {
        (false, Some(problems.join("; ")))
    }
}

/// One telemetry row from `r`: the health rule applied, a failed query's
/// value left at zero (or empty).
pub fn telemetry(r: &Readings, overheat_c: u32) -> GpuTelemetry {
    let (healthy, reason) = health(r, overheat_c);
    let (total, used) = r.memory.clone().unwrap_or((0, 0));
    GpuTelemetry {
        index: r.index,
        name: r.name.clone().unwrap_or_default(),
        uuid: r.uuid.clone().unwrap_or_default(),
        memory_total_bytes: total,
        memory_used_bytes: used,
        utilization_percent: r.utilization_percent.clone().unwrap_or(0),
        temperature_c: r.temperature_c.clone().unwrap_or(0),
        power_milliwatts: r.power_milliwatts,
        healthy,
        reason,
    }
}

/// The GPUs the config declares for `node`, as telemetry rows: nothing used,
/// healthy (nothing says otherwise). An id not in `topology` has none.
pub fn declared(topology: &Topology, node: NodeId) -> Vec<GpuTelemetry> {
    let Some(n) = topology.nodes.get(node.index()) else {
        return Vec::new();
    };
    n.gpus
        .iter()
        .filter_map(|id| topology.gpus.get(id.index()))
        .zip(0u32..)
        .map(|(gpu, index)| GpuTelemetry {
            index,
            name: gpu.model.clone(),
            uuid: String::new(),
            memory_total_bytes: gpu.memory_bytes,
            memory_used_bytes: 0,
            utilization_percent: 0,
            temperature_c: 0,
            power_milliwatts: None,
            healthy: true,
            reason: None,
        })
        .collect()
}

/// Checks the declared GPUs against the probed ones, matched by index, and
/// answers one row per *declared* GPU (the scheduler knows no others) plus
/// the warnings worth a log line: a memory or model mismatch, a declared GPU
/// NVML does not see (reported unhealthy), a device the config leaves out.
/// For a node with NVML; without it, use [`declared`] as it is.
pub fn merge(
    declared: &[GpuTelemetry],
    probed: &[GpuTelemetry],
) -> (Vec<GpuTelemetry>, Vec<String>) {
    let mut rows = Vec::with_capacity(declared.len());
    let mut warnings = Vec::new();
    for d in declared {
        let Some(p) = probed.iter().find(|p| p.index == d.index) else {
            let why = format!(
                "GPU {}: the config declares a {} with {} but NVML reports no device {}",
                d.index,
                d.name,
                gib(d.memory_total_bytes),
                d.index
            );
            warnings.push(why.clone());
            rows.push(GpuTelemetry {
                healthy: false,
                reason: Some(why),
                ..d.clone()
            });
            continue;
        };
        let (low, high) = if d.memory_total_bytes < p.memory_total_bytes {
            (d.memory_total_bytes, p.memory_total_bytes)
        } else {
            (p.memory_total_bytes, d.memory_total_bytes)
        };
        // In u128: 100 × a GPU's bytes does not fit every u64.
        if u128::from(high - low) * 100
            > u128::from(d.memory_total_bytes) * u128::from(MEMORY_TOLERANCE_PERCENT)
        {
            warnings.push(format!(
                "GPU {}: the config declares {} but NVML reports {} for {} ({}); \
                 jobs are admitted by the declared memory",
                d.index,
                gib(d.memory_total_bytes),
                gib(p.memory_total_bytes),
                p.name,
                p.uuid
            ));
        }
        // NVML says "NVIDIA L4" where a config says "L4".
        if !p.name.to_lowercase().contains(&d.name.to_lowercase()) {
            warnings.push(format!(
                "GPU {}: the config declares model {:?} but NVML reports {:?} ({})",
                d.index, d.name, p.name, p.uuid
            ));
        }
        rows.push(p.clone());
    }
    for p in probed {
        if !declared.iter().any(|d| d.index == p.index) {
            warnings.push(format!(
                "NVML device {} ({}, {}, {}) is not declared in the config; it stays unused",
                p.index,
                p.name,
                p.uuid,
                gib(p.memory_total_bytes)
            ));
        }
    }
    (rows, warnings)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// This machine's GPUs: NVML if it loads, the config's declaration if not.
pub struct GpuProbe {
    nvml: Option<Nvml>,
    source: GpuSource,
    overheat_c: u32,
}

impl std::fmt::Debug for GpuProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuProbe")
            .field("source", &self.source)
            .field("overheat_c", &self.overheat_c)
            .finish()
    }
}

impl GpuProbe {
    /// Loads NVML; a failure is not an error (most machines that run tests
    /// have no NVIDIA driver) but is remembered, for [`describe`](Self::describe).
    pub fn open() -> GpuProbe {
        let declared = |why: String| GpuProbe {
            nvml: None,
            source: GpuSource::Declared { why },
            overheat_c: DEFAULT_OVERHEAT_C,
        };
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => return declared(format!("Nvml::init failed: {e}")),
        };
        let devices = match nvml.device_count() {
            Ok(c) => c as usize,
            Err(e) => return declared(format!("NVML loaded but cannot count devices: {e}")),
        };
        // The version is only for the log line; not knowing it is no reason
        // to give up on telemetry.
        let driver_version = nvml
            .sys_driver_version()
            .unwrap_or_else(|e| format!("unknown ({e})"));
        GpuProbe {
            nvml: Some(nvml),
            source: GpuSource::Nvml {
                driver_version,
                devices,
            },
            overheat_c: DEFAULT_OVERHEAT_C,
        }
    }

    /// Sets the temperature at or above which a GPU is reported unhealthy.
    pub fn with_overheat_c(mut self, overheat_c: u32) -> GpuProbe {
        self.overheat_c = overheat_c;
        self
    }

    pub fn overheat_c(&self) -> u32 {
        self.overheat_c
    }

    pub fn source(&self) -> &GpuSource {
        &self.source
    }

    /// The one line the node logs about its GPUs at start.
    pub fn describe(&self) -> String {
        match &self.source {
            GpuSource::Nvml {
                driver_version,
                devices,
            } => format!("gpus: NVML driver {driver_version} — {devices} device(s)"),
            GpuSource::Declared { why } => {
                format!("gpus: declared in the config (NVML unavailable: {why})")
            }
        }
    }

    /// One row per NVML device, in index order; empty without NVML.
    pub fn sample(&self) -> Vec<GpuTelemetry> {
        let (Some(nvml), GpuSource::Nvml { devices, .. }) = (&self.nvml, &self.source) else {
            return Vec::new();
        };
        (0..*devices as u32)
            .map(|index| telemetry(&read(nvml, index), self.overheat_c))
            .collect()
    }

    /// The node's GPUs for the scheduler and status: the declared ones
    /// checked against NVML when it is there, with the warnings to log.
    pub fn telemetry_for(
        &self,
        topology: &Topology,
        node: NodeId,
    ) -> (Vec<GpuTelemetry>, Vec<String>) {
        let d = declared(topology, node);
        match self.source {
            GpuSource::Nvml { .. } => merge(&d, &self.sample()),
            GpuSource::Declared { .. } => (d, Vec::new()),
        }
    }
}

/// Every query for device `index`, each failure kept as its message.
fn read(nvml: &Nvml, index: u32) -> Readings {
    let device = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => return Readings::unreadable(index, format!("cannot open the device: {e}")),
    };
    let s = |e: nvml_wrapper::error::NvmlError| e.to_string();
    Readings {
        index,
        name: device.name().map_err(s),
        uuid: device.uuid().map_err(s),
        memory: device.memory_info().map(|m| (m.total, m.used)).map_err(s),
        utilization_percent: device.utilization_rates().map(|u| u.gpu).map_err(s),
        temperature_c: device.temperature(TemperatureSensor::Gpu).map_err(s),
        power_milliwatts: device.power_usage().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(index: u32) -> Readings {
        Readings {
            index,
            name: Ok("NVIDIA L4".into()),
            uuid: Ok(format!("GPU-{index}")),
            memory: Ok((24 * GIB, GIB)),
            utilization_percent: Ok(40),
            temperature_c: Ok(60),
            power_milliwatts: Some(70_000),
        }
    }

    #[test]
    fn health_a_cool_answering_gpu_is_healthy() {
        assert_eq!(health(&good(0), DEFAULT_OVERHEAT_C), (true, None));
        // Power is not a health matter.
        let r = Readings {
            power_milliwatts: None,
            ..good(0)
        };
        assert_eq!(health(&r, DEFAULT_OVERHEAT_C), (true, None));
    }

    #[test]
    fn health_overheat_is_at_or_above_the_threshold() {
        let at = |t| Readings {
            temperature_c: Ok(t),
            ..good(0)
        };
        assert!(health(&at(89), 90).0);
        let (ok, reason) = health(&at(90), 90);
        assert!(!ok);
        let reason = reason.expect("a reason");
        assert!(
            reason.contains("90 °C") && reason.contains("overheat"),
            "{reason}"
        );
        // The threshold is configurable.
        assert!(health(&at(80), 95).0);
        assert!(!health(&at(80), 80).0);
    }

    #[test]
    fn health_failed_queries_are_named_and_zero_memory_is_unhealthy() {
        let r = Readings {
            memory: Err("GPU is lost".into()),
            temperature_c: Err("not supported".into()),
            ..good(0)
        };
        let (ok, reason) = health(&r, DEFAULT_OVERHEAT_C);
        assert!(!ok);
        let reason = reason.expect("a reason");
        assert!(
            reason.contains("memory: GPU is lost") && reason.contains("temperature: not supported"),
            "{reason}"
        );
        let t = telemetry(&r, DEFAULT_OVERHEAT_C);
        assert_eq!((t.memory_total_bytes, t.temperature_c), (0, 0));
        assert_eq!(t.name, "NVIDIA L4");
        assert!(!t.healthy);

        let r = Readings {
            memory: Ok((0, 0)),
            ..good(0)
        };
        let (ok, reason) = health(&r, DEFAULT_OVERHEAT_C);
        assert!(!ok && reason.expect("a reason").contains("0 bytes"));

        let t = telemetry(&Readings::unreadable(3, "gone".into()), DEFAULT_OVERHEAT_C);
        assert_eq!(t.index, 3);
        assert!(!t.healthy && t.reason.expect("a reason").contains("gone"));
    }

    fn two_nodes() -> Topology {
        topology::config::parse_topology(
            r#"
            [[regions]]
            name = "r"
            [[nodes]]
            name = "cpu-only"
            region = "r"
            [[nodes]]
            name = "gpu-box"
            region = "r"
            [[nodes.gpus]]
            model = "L4"
            memory_gib = 24
            cost_per_hour = 0.8
            count = 2
            [[nodes.gpus]]
            model = "A100"
            memory_gib = 80
            cost_per_hour = 3.0
            [[projects]]
            name = "p"
            [[channels]]
            name = "c"
            home_region = "r"
            videos_per_day = 1
            project = "p"
            pipeline = { stages = [
                { name = "upload", kind = "publish", duration_ms = 1000 },
            ] }
            "#,
        )
        .expect("a valid config")
    }

    #[test]
    fn declared_gpus_are_the_nodes_own_indexed_from_zero() {
        let t = two_nodes();
        assert!(declared(&t, NodeId(0)).is_empty());
        assert!(declared(&t, NodeId(99)).is_empty());
        let d = declared(&t, NodeId(1));
        let summary: Vec<_> = d
            .iter()
            .map(|g| (g.index, g.name.as_str(), g.memory_total_bytes))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, "L4", 24 * GIB),
                (1, "L4", 24 * GIB),
                (2, "A100", 80 * GIB)
            ]
        );
        assert!(d.iter().all(|g| g.healthy
            && g.reason.is_none()
            && g.memory_used_bytes == 0
            && g.uuid.is_empty()));
    }

    #[test]
    fn merge_checks_the_declaration_against_nvml() {
        let d = declared(&two_nodes(), NodeId(1));
        // Device 0 matches within tolerance (NVML's total is a little less);
        // device 1 has far less memory than declared; device 2 is missing;
        // device 3 is not declared.
        let p0 = telemetry(
            &Readings {
                memory: Ok((24 * GIB - GIB / 2, 0)),
                ..good(0)
            },
            DEFAULT_OVERHEAT_C,
        );
        let p1 = telemetry(
            &Readings {
                memory: Ok((16 * GIB, 0)),
                ..good(1)
            },
            DEFAULT_OVERHEAT_C,
        );
        let p3 = telemetry(&good(3), DEFAULT_OVERHEAT_C);
        let (rows, warnings) = merge(&d, &[p0.clone(), p1.clone(), p3]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], p0);
        assert_eq!(rows[1], p1);
        assert!(!rows[2].healthy);
        assert_eq!(rows[2].name, "A100");
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("GPU 1:")
                && warnings[0].contains("24.0 GiB")
                && warnings[0].contains("16.0 GiB"),
            "{warnings:#?}"
        );
        assert!(
            warnings[1].starts_with("GPU 2:") && warnings[1].contains("no device 2"),
            "{warnings:#?}"
        );
        assert!(
            warnings[2].contains("device 3") && warnings[2].contains("not declared"),
            "{warnings:#?}"
        );

        // A model that is not the declared one is worth a warning too.
        let (_, warnings) = merge(
            &d[..1],
            &[telemetry(
                &Readings {
                    name: Ok("NVIDIA H200".into()),
                    ..good(0)
                },
                DEFAULT_OVERHEAT_C,
            )],
        );
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].contains("H200"), "{warnings:#?}");
    }

    /// Runs on any machine: without NVIDIA's library the node falls back to
    /// the config; with it, every device must answer.
    #[test]
    fn open_on_this_machine() {
        let probe = GpuProbe::open();
        let line = probe.describe();
        println!("{line}");
        assert!(line.starts_with("gpus: "), "{line}");
        let sample = probe.sample();
        match probe.source() {
            GpuSource::Declared { why } => {
                assert!(why.to_lowercase().contains("nvml"), "{why}");
                assert!(line.contains("NVML unavailable"), "{line}");
                assert!(sample.is_empty(), "{sample:?}");
            }
            GpuSource::Nvml { devices, .. } => {
                assert!(*devices > 0, "NVML loaded but sees no device");
                assert_eq!(sample.len(), *devices);
                for g in &sample {
                    println!("{g:?}");
                    assert!(g.memory_total_bytes > 0, "{g:?}");
                    assert!(!g.uuid.is_empty(), "{g:?}");
                }
            }
        }
    }
}
