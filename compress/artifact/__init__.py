"""The saved model: one file holding the state in compact encodings (bit-packed codes, Huffman,
sparse positions) and the module shapes and int8 conversion needed to rebuild it.
"""
