import Metrics
import Prometheus
import Synchronization
import VMMAPI
import VMMService

/// The daemon's Prometheus registry: swift-metrics counters from the service, request
/// counts by method and status, and VMs by state (read at scrape time).
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let requestCounters = Mutex<[String: Prometheus.Counter]>([:])
    /// The virtio gauges of the last scrape, by counter and labels (dropped when their VM is gone).
    private let deviceGauges = Mutex<[String: Prometheus.Gauge]>([:])

    /// Routes swift-metrics (the service's counters) into this registry. Once per process.
    func bootstrap() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "vmmd", metricName: "http_requests", unitName: "total",
                                               helpText: "API requests answered, by method and status.") }
    static var vms: MetricNameDescriptor { MetricNameDescriptor(namespace: "vmmd", metricName: "vms", unitName: "",
                                          helpText: "Managed VMs, by state.") }

    static var waiting: MetricNameDescriptor { MetricNameDescriptor(namespace: "vmmd", metricName: "waiting_requests", unitName: "",
                                              helpText: "Requests waiting for a VM's state (wait_for); a client that goes away takes its own with it.") }

    func countRequest(method: String, status: Int) {
        let key = "\(method) \(status)"
        let counter = requestCounters.withLock { counters in
            if let c = counters[key] { return c }
            let c = registry.makeCounter(descriptor: Self.requests, labels: [("method", method), ("status", String(status))])
            counters[key] = c
            return c
        }
        counter.increment()
    }

    /// The text exposition format, with the VM-state gauges and every VM's virtio
    /// device counters (`vmmd_virtio_<counter>{vm, owner, device}`) refreshed.
    func scrape(_ service: VMService) async -> [UInt8] {
        let counts = service.stateCounts()
        for state in VMState.allCases {
            registry.makeGauge(descriptor: Self.vms, labels: [("state", state.rawValue)]).set(Double(counts[state] ?? 0))
        }
        registry.makeGauge(descriptor: Self.waiting).set(Double(service.waitingRequests()))
        let devices = await service.deviceCounters()
        deviceGauges.withLock { gauges in
            var seen: Set<String> = []
            for d in devices {
                let key = "\(d.counter) \(d.owner) \(d.vm) \(d.device)"
                seen.insert(key)
                let gauge = gauges[key] ?? registry.makeGauge(
                    descriptor: MetricNameDescriptor(namespace: "vmmd", subsystem: "virtio", metricName: d.counter, unitName: "",
                                                     helpText: "A virtio device counter of a VM (see vmmctl stats)."),
                    labels: [("vm", d.vm), ("owner", d.owner), ("device", d.device)])
                gauges[key] = gauge
                gauge.set(Double(d.value))
            }
            for (key, gauge) in gauges where !seen.contains(key) {
                registry.unregisterGauge(gauge)
                gauges[key] = nil
            }
        }
        return registry.emitToBuffer()
    }
}
