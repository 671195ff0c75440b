import Foundation
import Testing
@testable import DiffuSeqCore

/// Loading whole models: the official `.pt`, its safetensors twin, training_args.json, errors.
@Suite("Model checkpoints")
struct ModelCheckpointTests {
    /// A temp folder holding the fixture checkpoint files.
    func fixtureFolder(_ files: [String] = ["ema_0.9999_000005.pt", "model.safetensors", "training_args.json",
                                             "bert_config.json", "vocab.txt"]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for f in files { try FileManager.default.copyItem(at: Fixtures.url(f), to: dir.appendingPathComponent(f)) }
        return dir
    }

    @Test("the official .pt and its safetensors twin load identically and sample identically")
    func ptEqualsSafetensors() throws {
        let dir = try fixtureFolder()
        let a = try ModelCheckpoint.load(dir.appendingPathComponent("ema_0.9999_000005.pt"))
        let b = try ModelCheckpoint.load(dir.appendingPathComponent("model.safetensors"))
        #expect(a.model.config == tinyConfig.with(dropout: 0.1, attentionDropout: 0.1))
        #expect(a.model.params.array == b.model.params.array)
        // The tied matrix is lm_head.weight (the official load_state_dict result).
        let g = try Golden("model.safetensors")
        #expect(a.model.tensor("word_embedding.weight") == g.f32("lm_head.weight"))
        #expect(a.model.tensor("word_embedding.weight") != g.f32("word_embedding.weight"))
        let e = try ModelCheckpoint.load(dir.appendingPathComponent("ema_0.9999_000005.pt"), tie: .wordEmbedding)
        #expect(e.model.tensor("word_embedding.weight") == g.f32("word_embedding.weight"))
        let ga = try TextGenerator(a), gb = try TextGenerator(b)
        let inp = [ga.prepare(source: "how do i cook ?", target: "what is good ?")]
        let o = SamplerOptions(kind: .ddpm, steps: 10)
        #expect(try ga.generate(inp, seed: 7, batchSize: 1, options: o) == gb.generate(inp, seed: 7, batchSize: 1, options: o))
        #expect(a.tokenizer.vocabSize == 97)
    }

    @Test("a model written as an official state dict reloads bit for bit")
    func roundTrip() throws {
        let dir = try fixtureFolder()
        let a = try ModelCheckpoint.load(dir.appendingPathComponent("model.safetensors"))
        let out = dir.appendingPathComponent("copy")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try SafeTensors.write(try ModelCheckpoint.stateDict(a.model, buffer: a.model.params, metadata: [:]),
                              to: out.appendingPathComponent("model.safetensors"))
        for f in ["training_args.json", "bert_config.json", "vocab.txt"] {
            try FileManager.default.copyItem(at: dir.appendingPathComponent(f), to: out.appendingPathComponent(f))
        }
        let b = try ModelCheckpoint.load(out)
        #expect(a.model.params.array == b.model.params.array)
        let names = try SafeTensors.read(out.appendingPathComponent("model.safetensors")).names
        #expect(names.count == 51 && names.contains("position_ids") && names.contains("lm_head.weight"))
    }

    @Test("missing training_args.json, missing keys, wrong shapes and unused keys are reported by name")
    func errors() throws {
        let noArgs = try fixtureFolder(["model.safetensors", "vocab.txt"])
        #expect { try ModelCheckpoint.load(noArgs) } throws: { "\($0)".contains("training_args.json") }
        // Remove a key, change a shape, add a key.
        let dir = try fixtureFolder()
        let src = try SafeTensors.read(dir.appendingPathComponent("model.safetensors"))
        var kept = src.tensors.filter { $0.name != "input_transformers.layer.1.output.dense.bias" }
        kept.append(try NamedTensor(name: "extra.weight", shape: [2], floats: [1, 2]))
        try SafeTensors.write(try TensorArchive(tensors: kept), to: dir.appendingPathComponent("model.safetensors"))
        #expect { try ModelCheckpoint.load(dir.appendingPathComponent("model.safetensors")) } throws: {
            "\($0)".contains("input_transformers.layer.1.output.dense.bias [32]")
        }
        var wrong = src.tensors.map { t -> NamedTensor in
            t.name == "time_embed.0.bias" ? (try? NamedTensor(name: t.name, shape: [63], floats: [Float](repeating: 0, count: 63))) ?? t : t
        }
        wrong.append(try NamedTensor(name: "extra.weight", shape: [2], floats: [1, 2]))
        try SafeTensors.write(try TensorArchive(tensors: wrong), to: dir.appendingPathComponent("model.safetensors"))
        #expect { try ModelCheckpoint.load(dir.appendingPathComponent("model.safetensors")) } throws: {
            "\($0)".contains("time_embed.0.bias: file has [63], model expects [64]")
        }
        let ok = try fixtureFolder()
        try SafeTensors.write(try TensorArchive(tensors: src.tensors + [try NamedTensor(name: "extra.weight", shape: [2], floats: [1, 2])]),
                              to: ok.appendingPathComponent("model.safetensors"))
        let m = try ModelCheckpoint.load(ok.appendingPathComponent("model.safetensors"))
        #expect(m.notes.joined().contains("extra.weight [2]"))
    }
}

extension ModelConfig {
    func with(dropout: Float, attentionDropout: Float) -> ModelConfig {
        var c = self
        c.dropout = dropout; c.attentionDropout = attentionDropout
        return c
    }
}

/// The typed parameter views (`ModelParameters`) and the key table (`ParameterLayout.entries`) describe the
/// same tensors: every entry exactly once, in `named_parameters()` order, with the shapes the roles imply.
@Suite("Parameter layout")
struct ParameterLayoutTests {
    @Test("typed views cover every checkpoint key once, in order", arguments: [true, false])
    func viewsCoverTheTable(projections: Bool) throws {
        var c = tinyConfig
        if !projections { c.hiddenDim = c.width }
        let layout = ParameterLayout(c)
        #expect(layout.parameters.all == layout.entries.map(\.id))
        #expect((layout.parameters.inputUp != nil) == c.hasProjections && (layout.parameters.outputDown != nil) == c.hasProjections)
        let q = layout.parameters.layers[1].query
        #expect(layout.entry("input_transformers.layer.1.attention.self.query.weight")?.id == q.weight)
        #expect(layout.entry("input_transformers.layer.1.attention.self.query.weight")?.shape == [q.outputs, q.inputs])
        #expect(layout.entry("lm_head.weight")?.id == layout.parameters.wordEmbedding)
        #expect(layout.entries.allSatisfy { $0.offset % 16 == 0 })
    }
}
