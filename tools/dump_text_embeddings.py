#!/usr/bin/env python
"""Write L2-normalised class or caption text embeddings (.npy/.pt) with a chosen frozen text encoder.

    python tools/dump_text_embeddings.py --vocabulary vindr_cxr --output vindr_minilm.npy
    python tools/dump_text_embeddings.py --backend open_clip \\
        --name hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 \\
        --vocabulary nih_cxr14 --granularity unelaborate --template "a chest x-ray showing {}." --output nih.npy
    python tools/dump_text_embeddings.py --config-file configs/X.yaml --captions train.json --output captions.pt

A class file (C x D) can be used as MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH. Logic and options:
cxr_codet/modeling/text/dump.py.
"""
import sys

from cxr_codet.modeling.text.dump import main

if __name__ == "__main__":
    main(sys.argv[1:])
