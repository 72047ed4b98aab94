use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The standard `process_*` metrics (as the Go and Python clients export them), read from
/// `/proc/self` at each scrape. A value that cannot be read is left out, never faked.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            let resident = ConstGauge::new((stat.rss * procfs::page_size()) as i64);
            resident.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(&Unit::Bytes),
                resident.metric_type(),
            )?)?;
            let virtual_memory = ConstGauge::new(stat.vsize as i64);
            virtual_memory.encode(encoder.encode_descriptor(
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(&Unit::Bytes),
                virtual_memory.metric_type(),
            )?)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                start.encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds",
                    Some(&Unit::Seconds),
                    start.metric_type(),
                )?)?;
            }
        }
        if let Ok(open) = me.fd_count() {
            let open = ConstGauge::new(open as i64);
            open.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                open.metric_type(),
            )?)?;
        }
        if let Ok(limits) = me.limits() {
            if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
                let max = ConstGauge::new(max as i64);
                max.encode(encoder.encode_descriptor(
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    None,
                    max.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}
