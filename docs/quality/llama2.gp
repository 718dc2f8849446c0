# Charts of llama2.csv (written by: llama2_run --sweep docs/quality/llama2.csv). Run here: gnuplot llama2.gp
set datafile separator ','
set terminal svg size 640,420 font 'sans,11' background rgb 'white'
set termoption noenhanced
set grid
set key bottom right
sel(src, m) = sprintf("< awk -F, '$1==\"%s\" && $3==\"%s\"' llama2.csv", src, m)
set xlabel 'fraction of keys read (dense + sampled, all layers and heads)'
set output 'llama2_ppl.svg'
set title 'stories260K: perplexity with sampled attention / exact (story.txt)'
set ylabel 'perplexity ratio'
set key top right
plot sel('file','lsh') using 11:($13/$12) with points pt 7 lc rgb '#d62728' title 'LSH (MagicPIG)', \
     sel('file','topk') using 11:($13/$12) with points pt 5 lc rgb '#1f77b4' title 'oracle top-k', \
     sel('file','uniform') using 11:($13/$12) with points pt 9 lc rgb '#7f7f7f' title 'uniform', \
     sel('file','oracle') using 11:($13/$12) with points pt 13 lc rgb '#2ca02c' title 'oracle sampling'
set output 'llama2_agreement.svg'
set title 'stories260K: greedy agreement with exact attention (prompt)'
set ylabel 'fraction of positions with the same argmax'
set key bottom right
plot sel('prompt','lsh') using 11:14 with points pt 7 lc rgb '#d62728' title 'LSH (MagicPIG)', \
     sel('prompt','topk') using 11:14 with points pt 5 lc rgb '#1f77b4' title 'oracle top-k', \
     sel('prompt','uniform') using 11:14 with points pt 9 lc rgb '#7f7f7f' title 'uniform', \
     sel('prompt','oracle') using 11:14 with points pt 13 lc rgb '#2ca02c' title 'oracle sampling'
