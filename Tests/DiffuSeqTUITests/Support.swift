import DiffuSeqCore
import DiffuSeqTUI

let demoSource = "thou shalt love thy neighbour as thyself"
let demoReference = "you shall love your neighbour as yourself"

/// A headless explorer on the demo backend, run to completion.
func makeExplorer(size: (Int, Int) = (80, 24), seeds: [UInt64] = [42, 7], steps: Int = 50,
                  source: String = demoSource, reference: String? = demoReference,
                  backend: any ExplorerBackend = DemoExplorerBackend()) -> HeadlessExplorer {
    HeadlessExplorer(backend: backend, config: ExplorerConfig(source: source, reference: reference, seeds: seeds, steps: steps),
                     size: size)
}

/// Checks the grid invariants: every row adds up to the width, continuation cells follow wide cells.
func gridIsAligned(_ b: ScreenBuffer) -> Bool {
    for y in 0..<b.height {
        var x = 0
        while x < b.width {
            let c = b[x, y]
            if c.isContinuation { return false }
            if c.width == 2 {
                if x + 1 >= b.width || !b[x + 1, y].isContinuation { return false }
                x += 2
            } else if c.width == 1 {
                x += 1
            } else {
                return false
            }
        }
        if TextWidth.width(of: b.lines[y]) != b.width { return false }
    }
    return true
}
