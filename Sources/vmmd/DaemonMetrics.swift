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

    /// Routes swift-metrics (the service's counters) into this registry. Once per process.
    func bootstrap() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "vmmd", metricName: "http_requests", unitName: "total",
                                               helpText: "API requests answered, by method and status.") }
    static var vms: MetricNameDescriptor { MetricNameDescriptor(namespace: "vmmd", metricName: "vms", unitName: "",
                                          helpText: "Managed VMs, by state.") }

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

    /// The text exposition format, with the VM-state gauges refreshed.
    func scrape(_ service: VMService) -> [UInt8] {
        let counts = service.stateCounts()
        for state in VMState.allCases {
            registry.makeGauge(descriptor: Self.vms, labels: [("state", state.rawValue)]).set(Double(counts[state] ?? 0))
        }
        return registry.emitToBuffer()
    }
}
