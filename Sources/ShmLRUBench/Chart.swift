// The SVG chart: two panels of grouped bars, every bar a ratio to the floor in
// the same run, labelled with the ratio and, under it, the absolute figure.
// Top: one process, time per op (log scale, lower is better). Bottom: two
// processes, total throughput (higher is better). Targets in red: a dashed line
// across the group and, under the group's name, the target's text (never among
// the bar labels). Sizes are chosen so that no two labels overlap: bars at
// least 46 px wide for labels at most 8 characters of 10 px type.
import Glibc

struct Chart {
    let cells: [Cell]
    let config: BenchConfig
    let costs: GrowthCosts
    var store = StoreSection()

    let width = 1500.0
    let left = 80.0
    let right = 20.0
    let panelHeight = 300.0
    let bars: [StoreKind] = [.dictionary, .lruExact, .lruInterval]

    func color(_ kind: StoreKind) -> String {
        switch kind {
        case .floor: "#555555"
        case .dictionary: "#9aa5b1"
        case .lruExact: "#e08a2c"
        case .lruInterval: "#2c7be0"
        }
    }

    var groups: [(Workload, Int)] {
        config.capacities.flatMap { capacity in Workload.allCases.map { ($0, capacity) } }
    }

    func cell(_ kind: StoreKind, _ workload: Workload, _ capacity: Int, _ processes: Int) -> Cell? {
        cells.first { $0.store == kind && $0.workload == workload && $0.capacity == capacity && $0.processes == processes }
    }

    func text(_ x: Double, _ y: Double, _ content: String, size: Int = 12, anchor: String = "middle", weight: String = "normal", fill: String = "#222")
        -> String
    {
        let escaped = xmlEscaped(content)
        return "<text x=\"\(fmt(x, 1))\" y=\"\(fmt(y, 1))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(fill)\">\(escaped)</text>\n"
    }

    func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1, dash: String? = nil) -> String {
        "<line x1=\"\(fmt(x1, 1))\" y1=\"\(fmt(y1, 1))\" x2=\"\(fmt(x2, 1))\" y2=\"\(fmt(y2, 1))\" stroke=\"\(stroke)\" stroke-width=\"\(fmt(width, 1))\""
            + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>\n"
    }

    func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String) -> String {
        "<rect x=\"\(fmt(x, 1))\" y=\"\(fmt(y, 1))\" width=\"\(fmt(w, 1))\" height=\"\(fmt(max(h, 0.5), 1))\" fill=\"\(fill)\"/>\n"
    }

    /// One panel at `top`; `scale` maps a ratio to 0 (bottom) ... 1 (top).
    func panel(
        top: Double, processes: Int, title: String, ticks: [Double], scale: @escaping (Double) -> Double, floorNote: (Cell) -> String
    ) -> String {
        var out = text(left, top - 12, title, size: 15, anchor: "start", weight: "bold")
        let plotWidth = width - left - right
        let groupWidth = plotWidth / Double(groups.count)
        let y = { (ratio: Double) -> Double in top + self.panelHeight * (1 - min(max(scale(ratio), 0), 1)) }
        // Grid and axis.
        for tick in ticks {
            out += line(left, y(tick), width - right, y(tick), stroke: tick == 1 ? "#333" : "#ddd", width: tick == 1 ? 1.5 : 1)
            let label = fmt(tick, tick < 1 ? 2 : tick < 10 ? 1 : 0) + "×" + (tick == 1 ? " floor" : "")
            out += text(left - 6, y(tick) + 4, label, size: 11, anchor: "end", weight: tick == 1 ? "bold" : "normal")
        }
        for (g, (workload, capacity)) in groups.enumerated() {
            let x0 = left + Double(g) * groupWidth
            let barWidth = (groupWidth - 24) / Double(bars.count)
            for (b, kind) in bars.enumerated() {
                guard let c = cell(kind, workload, capacity, processes) else { continue }
                let x = x0 + 12 + Double(b) * barWidth
                let barTop = y(c.ratio)
                out += rect(x + 2, barTop, barWidth - 4, top + panelHeight - barTop, fill: color(kind))
                out += text(x + barWidth / 2, barTop - 15, fmt(c.ratio, c.ratio < 10 ? 2 : 1) + "×", size: 10, weight: "bold")
                out += text(x + barWidth / 2, barTop - 4, absolute(c), size: 9, fill: "#555")
            }
            let target = Target.of(workload, capacity: capacity, processes: processes)
            if let target {
                let ty = y(target.limit)
                out += line(x0 + 6, ty, x0 + groupWidth - 6, ty, stroke: "#d62728", width: 2, dash: "6,3")
            }
            out += text(x0 + groupWidth / 2, top + panelHeight + 16, workload.rawValue, size: 11, weight: "bold")
            out += text(x0 + groupWidth / 2, top + panelHeight + 30, "\(fmtCapacity(capacity)) records", size: 11)
            if let floor = cell(.floor, workload, capacity, processes) {
                out += text(x0 + groupWidth / 2, top + panelHeight + 44, floorNote(floor), size: 10, fill: "#555")
            }
            if let target {
                out += text(x0 + groupWidth / 2, top + panelHeight + 58, "target " + target.text, size: 10, fill: "#d62728")
            }
            if g > 0 { out += line(x0, top, x0, top + panelHeight, stroke: "#eee") }
        }
        out += line(left, top, left, top + panelHeight, stroke: "#333")
        return out
    }

    /// A bar's absolute figure, short: `123 ns` (one process) or `12.3M/s` (two).
    func absolute(_ c: Cell) -> String {
        if c.processes == 1 { return fmt(c.median, c.median < 10 ? 1 : 0) + " ns" }
        let rate = c.median
        return rate >= 1e6 ? fmt(rate / 1e6, rate < 1e8 ? 1 : 0) + "M/s" : fmt(rate / 1e3, 0) + "K/s"
    }

    func svg() -> String {
        let height = 2 * panelHeight + 300 + store.svgHeight
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
        out += rect(0, 0, width, height, fill: "#ffffff")
        out += text(
            left, 26,
            "ShmLRU vs the floor (direct-indexed shm array): 250-byte records, 200-byte values\(config.quick ? " (quick run)" : "")",
            size: 17, anchor: "start", weight: "bold")
        // Legend.
        var lx = left
        for kind in bars {
            out += rect(lx, 38, 14, 14, fill: color(kind))
            out += text(lx + 20, 50, kind.title, size: 12, anchor: "start")
            lx += 330
        }
        let logLow = log2(0.5)
        let singleMax = max(16.0, (cells.filter { $0.processes == 1 }.map(\.ratio).max() ?? 1) * 1.6)  // room for two label lines
        let logHigh = log2(singleMax)
        var ticks: [Double] = []
        var t = 0.5
        while t <= singleMax { ticks.append(t); t *= 2 }
        out += panel(
            top: 90, processes: 1, title: "One process: time per operation ÷ the floor's (log scale; lower is better)",
            ticks: ticks, scale: { (log2(max($0, 0.01)) - logLow) / (logHigh - logLow) },
            floorNote: { "floor " + fmt($0.median, 1) + " ns/op" })
        let twoMax = max(1.25, (cells.filter { $0.processes == 2 }.map(\.ratio).max() ?? 1) * 1.15)
        var twoTicks: [Double] = []
        var u = 0.0
        while u <= twoMax { twoTicks.append(u); u += twoMax > 2.5 ? 0.5 : 0.25 }
        out += panel(
            top: 90 + panelHeight + 110, processes: 2,
            title: "Two processes at once: total throughput ÷ the floor's (higher is better)", ticks: twoTicks,
            scale: { $0 / twoMax }, floorNote: { "floor " + fmtRate($0.median) })
        let footer = 2 * panelHeight + 272
        out += text(
            left, footer,
            "Median of \(config.runs) runs per bar; above each bar its ratio to the floor and its own figure. Interval mode: "
                + "reads mark (at most once per link and per \(fmt(Double(config.intervalNanoseconds) / 1e9, 3)) s).",
            size: 11, anchor: "start", fill: "#444")
        out += text(
            left, footer + 16,
            "Costs that grow (\(fmtCapacity(costs.capacity))): attach \(fmt(costs.attachMedianMs, 3)) ms, reloadIndex "
                + "\(fmt(costs.reloadMedianMs, 1)) ms, record header \(costs.recordHeaderBytes) B, index "
                + "\(fmt(costs.sharedIndexBytesPerRecord, 1)) B/record.",
            size: 11, anchor: "start", fill: "#444")
        out += store.svgPanel(top: footer + 30, left: left, width: width - left - right)
        out += "</svg>\n"
        return out
    }
}

/// Escapes text for SVG.
func xmlEscaped(_ text: String) -> String {
    var out = ""
    for ch in text {
        switch ch {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        default: out.append(ch)
        }
    }
    return out
}
