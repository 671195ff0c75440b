// DiffuSeqCore — the engine: model, diffusion, samplers, training, tokenizers, checkpoints, metrics.
//
// Glossary (used in every shape comment):
//   B  batch size                      T  sequence length (DiffuSeq `seq_len`)
//   C  encoder width (BERT hidden)     NH heads, HS = C / NH head size
//   F  FFN (intermediate) size         NL encoder layers
//   V  vocabulary size                 D  word-embedding dims (`hidden_dim`, 128 in DiffuSeq)
//   Dt timestep-embedding dims (`hidden_t_dim`)
//   t  a diffusion timestep index 0..<diffusionSteps (code index; paper step t+1)
//
// Conventions (after llm.c): one flat Float buffer holds every parameter, with named ranges in the
// order of PyTorch's `named_parameters()`; gradients and AdamW moments use the same layout.
// Layer kernels are free functions over raw pointers; backward passes *accumulate* into gradients.
// Linear weights are stored [out, in] as in PyTorch: y = x·Wᵀ + b. Matrix products go through
// OpenBLAS `cblas_sgemm` (training, batches; see `BLAS`) or, for runs of ≤ 512 positions on AVX-512
// CPUs, through weights packed once into panels (`PackedModel`, `Sources/CKernels/packed.c`).
