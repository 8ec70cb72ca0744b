// The outputs: a table on stdout, JSON ($BENCH_JSON), and an SVG chart ($BENCH_SVG).
import Glibc

/// `value` with `decimals` digits after the point (no Foundation here).
func fmt(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let negative = value < 0
    let scaled = Int((abs(value) * scale).rounded())
    var digits = String(scaled)
    if decimals > 0 {
        while digits.count <= decimals { digits = "0" + digits }
        digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -decimals))
    }
    return (negative ? "-" : "") + digits
}

/// Operations per second, with M or K.
func fmtRate(_ rate: Double) -> String {
    rate >= 1e6 ? fmt(rate / 1e6, 2) + " M/s" : fmt(rate / 1e3, 1) + " K/s"
}

func fmtCapacity(_ capacity: Int) -> String {
    capacity >= 1_000_000 && capacity % 1_000_000 == 0
        ? "\(capacity / 1_000_000)M" : capacity >= 1_000 && capacity % 1_000 == 0 ? "\(capacity / 1_000)K" : "\(capacity)"
}

func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let count = text.unicodeScalars.count
    guard count < width else { return text }
    let spaces = String(repeating: " ", count: width - count)
    return right ? spaces + text : text + spaces
}

struct Report {
    let config: BenchConfig
    let cells: [Cell]
    let costs: GrowthCosts
    let seconds: Double
    /// The store section (StoreBench.swift).
    var store = StoreSection()

    func figure(_ value: Double, processes: Int) -> String {
        processes == 1 ? fmt(value, 1) : fmt(value / 1e6, 2)
    }

    func table() -> String {
        var out = ""
        out += "\nShmLRU bench\(config.quick ? " (quick)" : ""): median of \(config.runs) runs, [min–max], and ×floor = ratio to the floor in the same run.\n"
        out += "Interval mode: a read marks its record (first use after a link, then at most every \(fmt(Double(config.intervalNanoseconds) / 1e9, 3)) s); marked tails get a second chance. "
        out += "One process: ns/op (lower is better). Two processes: total M ops/s (higher is better).\n\n"
        out += pad("workload", 18) + pad("cap", 5) + pad("procs", 6) + pad("store", 17) + pad("median", 9, right: true)
            + pad("min", 9, right: true) + pad("max", 9, right: true) + pad("×floor", 9, right: true) + "  target\n"
        var previous = ""
        for cell in cells {
            let group = "\(cell.workload.rawValue) \(cell.capacity) \(cell.processes)"
            var line = ""
            if group != previous {
                line += pad(cell.workload.rawValue, 18) + pad(fmtCapacity(cell.capacity), 5) + pad("\(cell.processes)", 6)
                previous = group
            } else {
                line += pad("", 29)
            }
            line += pad(cell.store.short, 17) + pad(figure(cell.median, processes: cell.processes), 9, right: true)
                + pad(figure(cell.min, processes: cell.processes), 9, right: true)
                + pad(figure(cell.max, processes: cell.processes), 9, right: true)
                + pad(fmt(cell.ratio, 2) + "×", 9, right: true)
            if cell.store == .lruExact || cell.store == .lruInterval,
                let target = Target.of(cell.workload, capacity: cell.capacity, processes: cell.processes)
            {
                line += "  " + target.text + (target.met(cell.ratio) ? " met" : " MISSED")
            }
            if let chances = cell.secondChancesPerOp, chances > 0 { line += "  (second chances at the tail: \(fmt(chances, 3))/op)" }
            if cell.errors > 0 { line += "  WRONG VALUES: \(cell.errors)" }
            out += line + "\n"
        }
        out += "\nTargets (ratio to the floor, same run):\n"
        out += pad("", 34) + pad("target", 9) + pad("exact", 16) + pad("interval", 16) + "\n"
        for cell in cells where cell.store == .lruExact {
            guard let target = Target.of(cell.workload, capacity: cell.capacity, processes: cell.processes),
                let other = cells.first(where: {
                    $0.store == .lruInterval && $0.workload == cell.workload && $0.capacity == cell.capacity && $0.processes == cell.processes
                })
            else { continue }
            func mark(_ c: Cell) -> String { fmt(c.ratio, 2) + "× " + (target.met(c.ratio) ? "met" : "MISSED") }
            out += "  " + pad("\(cell.workload.rawValue) \(fmtCapacity(cell.capacity)) ×\(cell.processes) process\(cell.processes > 1 ? "es" : "")", 32)
                + pad(target.text, 9) + pad(mark(cell), 16) + pad(mark(other), 16) + "\n"
        }
        out += "\nCosts that grow (\(fmtCapacity(costs.capacity)) records):\n"
        out += "  attach, full shared-index segment   \(fmt(costs.attachMedianMs, 3)) ms median, \(fmt(costs.attachMinMs, 3)) ms min   (target ≤ 1 ms) \(costs.attachMedianMs <= 1 ? "met" : "MISSED")\n"
        out += "  reloadIndex, process-local index    \(fmt(costs.reloadMedianMs, 1)) ms median, \(fmt(costs.reloadMinMs, 1)) ms min   (target ≤ 50 ms) \(costs.reloadMedianMs <= 50 ? "met" : "MISSED")\n"
        out += "  attach, process-local index (rebuilds it)  \(fmt(costs.localAttachMs, 1)) ms\n"
        out += "  record header                       \(costs.recordHeaderBytes) bytes   (target ≤ 32) \(costs.recordHeaderBytes <= 32 ? "met" : "MISSED")\n"
        out += "  shared index per record             \(fmt(costs.sharedIndexBytesPerRecord, 2)) bytes   (target ≤ 8) \(costs.sharedIndexBytesPerRecord <= 8.001 ? "met" : "MISSED")\n"
        out += store.table()
        return out
    }

    // MARK: JSON

    func json() -> String {
        func number(_ value: Double) -> String { value.isFinite ? fmt(value, 3) : "null" }
        var items: [String] = []
        for cell in cells {
            var fields: [String] = [
                "\"workload\": \"\(cell.workload.rawValue)\"",
                "\"capacity\": \(cell.capacity)",
                "\"processes\": \(cell.processes)",
                "\"mode\": \"\(cell.store.rawValue)\"",
                "\"unit\": \"\(cell.unit)\"",
            ]
            let name = cell.processes == 1 ? "ns_per_op" : "ops_per_s"
            fields += [
                "\"\(name)\": {\"median\": \(number(cell.median)), \"min\": \(number(cell.min)), \"max\": \(number(cell.max))}",
                "\"runs\": [\(cell.samples.map(number).joined(separator: ", "))]",
                "\"floor_\(name)_median\": \(number(cell.floorMedian))",
                "\"ratio_to_floor\": \(fmt(cell.ratio, 4))",
                "\"errors\": \(cell.errors)",
            ]
            if let target = Target.of(cell.workload, capacity: cell.capacity, processes: cell.processes),
                cell.store == .lruExact || cell.store == .lruInterval
            {
                fields.append(
                    "\"target\": {\"ratio\": \(target.limit), \"at_most\": \(target.atMost), \"met\": \(target.met(cell.ratio))}")
            }
            if let chances = cell.secondChancesPerOp { fields.append("\"second_chances_per_op\": \(fmt(chances, 6))") }
            items.append("    {" + fields.joined(separator: ", ") + "}")
        }
        return """
            {
              "bench": "ShmLRUBench",
              "quick": \(config.quick),
              "runs_per_cell": \(config.runs),
              "record_payload_bytes": \(Spec.recordSize),
              "value_bytes": \(Spec.valueSize),
              "interval_promotion_ns": \(config.intervalNanoseconds),
              "seconds": \(fmt(seconds, 1)),
              "cells": [
            \(items.joined(separator: ",\n"))
              ],
              "costs_that_grow": {
                "capacity": \(costs.capacity),
                "attach_shared_index_ms": {"median": \(fmt(costs.attachMedianMs, 4)), "min": \(fmt(costs.attachMinMs, 4)), "target": 1},
                "reload_index_process_local_ms": {"median": \(fmt(costs.reloadMedianMs, 3)), "min": \(fmt(costs.reloadMinMs, 3)), "target": 50},
                "attach_process_local_ms": \(fmt(costs.localAttachMs, 3)),
                "record_header_bytes": {"value": \(costs.recordHeaderBytes), "target": 32},
                "shared_index_bytes_per_record": {"value": \(fmt(costs.sharedIndexBytesPerRecord, 4)), "target": 8}
              },
              "store": \(store.json())
            }

            """
    }

    func writeJSON() throws { try writeFile(config.jsonPath, json()) }
    func writeSVG() throws { try writeFile(config.svgPath, Chart(cells: cells, config: config, costs: costs, store: store).svg()) }

    func writeFile(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchFailure(description: "cannot write \(path): errno \(errno)") }
        writeAll(fd, text)
        close(fd)
    }
}
