# Written by lshattn_eval. Run in this folder: gnuplot charts.gp
set datafile separator ','
set terminal svg size 640,420 font 'sans,11' background rgb 'white'
set termoption noenhanced
set key top right
set grid
set logscale xy
set format '%g'
set output 'glove16384_error_median.svg'
set title 'glove16384: relative output error (median) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"glove16384\" && $2==\"lsh\"' results.csv" using 10:12 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove16384\" && $2==\"topk\"' results.csv" using 10:12 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"glove16384\" && $2==\"uniform\"' results.csv" using 10:12 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"glove16384\" && $2==\"oracle\"' results.csv" using 10:12 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
set output 'glove16384_error_p95.svg'
set title 'glove16384: relative output error (p95) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"glove16384\" && $2==\"lsh\"' results.csv" using 10:13 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove16384\" && $2==\"topk\"' results.csv" using 10:13 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"glove16384\" && $2==\"uniform\"' results.csv" using 10:13 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"glove16384\" && $2==\"oracle\"' results.csv" using 10:13 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
unset logscale
set output 'glove16384_entropy.svg'
set title 'glove16384: attention entropy per query (nats; ln n = 9.7)'
set xlabel 'entropy (nats)'
set ylabel 'queries'
set style fill solid 0.6
bw = 0.5
bin(x) = bw * floor(x / bw) + bw / 2
plot "< awk -F, '$1==\"glove16384\"' entropy.csv" using (bin($3)):(1.0) smooth frequency with boxes lc rgb '#1f77b4' notitle
set logscale xy
set output 'glove16384_error_by_entropy.svg'
set title 'glove16384: error per query vs its attention entropy (tuned@0.02)'
set xlabel 'attention entropy (nats)'
set ylabel '|o_hat - o| / |o| (mean over seeds)'
unset logscale x
set logscale y
set key bottom right
plot "< awk -F, '$1==\"glove16384\" && $2==\"lsh\"' per_query.csv" using 5:6 with points pt 7 lc rgb '#d62728' ps 0.8 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove16384\" && $2==\"topk\"' per_query.csv" using 5:6 with points pt 5 lc rgb '#1f77b4' ps 0.8 title 'oracle top-k', "< awk -F, '$1==\"glove16384\" && $2==\"uniform\"' per_query.csv" using 5:6 with points pt 9 lc rgb '#7f7f7f' ps 0.8 title 'uniform', "< awk -F, '$1==\"glove16384\" && $2==\"oracle\"' per_query.csv" using 5:6 with points pt 13 lc rgb '#2ca02c' ps 0.8 title 'oracle sampling'
set key top right
set logscale xy
set output 'glove131072_error_median.svg'
set title 'glove131072: relative output error (median) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"glove131072\" && $2==\"lsh\"' results.csv" using 10:12 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove131072\" && $2==\"topk\"' results.csv" using 10:12 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"glove131072\" && $2==\"uniform\"' results.csv" using 10:12 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"glove131072\" && $2==\"oracle\"' results.csv" using 10:12 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
set output 'glove131072_error_p95.svg'
set title 'glove131072: relative output error (p95) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"glove131072\" && $2==\"lsh\"' results.csv" using 10:13 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove131072\" && $2==\"topk\"' results.csv" using 10:13 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"glove131072\" && $2==\"uniform\"' results.csv" using 10:13 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"glove131072\" && $2==\"oracle\"' results.csv" using 10:13 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
unset logscale
set output 'glove131072_entropy.svg'
set title 'glove131072: attention entropy per query (nats; ln n = 11.8)'
set xlabel 'entropy (nats)'
set ylabel 'queries'
set style fill solid 0.6
bw = 0.5
bin(x) = bw * floor(x / bw) + bw / 2
plot "< awk -F, '$1==\"glove131072\"' entropy.csv" using (bin($3)):(1.0) smooth frequency with boxes lc rgb '#1f77b4' notitle
set logscale xy
set output 'glove131072_error_by_entropy.svg'
set title 'glove131072: error per query vs its attention entropy (tuned@0.02)'
set xlabel 'attention entropy (nats)'
set ylabel '|o_hat - o| / |o| (mean over seeds)'
unset logscale x
set logscale y
set key bottom right
plot "< awk -F, '$1==\"glove131072\" && $2==\"lsh\"' per_query.csv" using 5:6 with points pt 7 lc rgb '#d62728' ps 0.8 title 'LSH (MagicPIG)', "< awk -F, '$1==\"glove131072\" && $2==\"topk\"' per_query.csv" using 5:6 with points pt 5 lc rgb '#1f77b4' ps 0.8 title 'oracle top-k', "< awk -F, '$1==\"glove131072\" && $2==\"uniform\"' per_query.csv" using 5:6 with points pt 9 lc rgb '#7f7f7f' ps 0.8 title 'uniform', "< awk -F, '$1==\"glove131072\" && $2==\"oracle\"' per_query.csv" using 5:6 with points pt 13 lc rgb '#2ca02c' ps 0.8 title 'oracle sampling'
set key top right
set logscale xy
set output 'synthetic16384_error_median.svg'
set title 'synthetic16384: relative output error (median) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"synthetic16384\" && $2==\"lsh\"' results.csv" using 10:12 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic16384\" && $2==\"topk\"' results.csv" using 10:12 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"synthetic16384\" && $2==\"uniform\"' results.csv" using 10:12 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"synthetic16384\" && $2==\"oracle\"' results.csv" using 10:12 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
set output 'synthetic16384_error_p95.svg'
set title 'synthetic16384: relative output error (p95) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"synthetic16384\" && $2==\"lsh\"' results.csv" using 10:13 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic16384\" && $2==\"topk\"' results.csv" using 10:13 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"synthetic16384\" && $2==\"uniform\"' results.csv" using 10:13 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"synthetic16384\" && $2==\"oracle\"' results.csv" using 10:13 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
unset logscale
set output 'synthetic16384_entropy.svg'
set title 'synthetic16384: attention entropy per query (nats; ln n = 9.7)'
set xlabel 'entropy (nats)'
set ylabel 'queries'
set style fill solid 0.6
bw = 0.5
bin(x) = bw * floor(x / bw) + bw / 2
plot "< awk -F, '$1==\"synthetic16384\"' entropy.csv" using (bin($3)):(1.0) smooth frequency with boxes lc rgb '#1f77b4' notitle
set logscale xy
set output 'synthetic16384_error_by_entropy.svg'
set title 'synthetic16384: error per query vs its attention entropy (tuned@0.02)'
set xlabel 'attention entropy (nats)'
set ylabel '|o_hat - o| / |o| (mean over seeds)'
unset logscale x
set logscale y
set key bottom right
plot "< awk -F, '$1==\"synthetic16384\" && $2==\"lsh\"' per_query.csv" using 5:6 with points pt 7 lc rgb '#d62728' ps 0.8 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic16384\" && $2==\"topk\"' per_query.csv" using 5:6 with points pt 5 lc rgb '#1f77b4' ps 0.8 title 'oracle top-k', "< awk -F, '$1==\"synthetic16384\" && $2==\"uniform\"' per_query.csv" using 5:6 with points pt 9 lc rgb '#7f7f7f' ps 0.8 title 'uniform', "< awk -F, '$1==\"synthetic16384\" && $2==\"oracle\"' per_query.csv" using 5:6 with points pt 13 lc rgb '#2ca02c' ps 0.8 title 'oracle sampling'
set key top right
set logscale xy
set output 'synthetic131072_error_median.svg'
set title 'synthetic131072: relative output error (median) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"synthetic131072\" && $2==\"lsh\"' results.csv" using 10:12 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic131072\" && $2==\"topk\"' results.csv" using 10:12 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"synthetic131072\" && $2==\"uniform\"' results.csv" using 10:12 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"synthetic131072\" && $2==\"oracle\"' results.csv" using 10:12 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
set output 'synthetic131072_error_p95.svg'
set title 'synthetic131072: relative output error (p95) vs keys sampled'
set xlabel 'fraction of the sampled range read'
set ylabel '|o_hat - o| / |o|'
plot "< awk -F, '$1==\"synthetic131072\" && $2==\"lsh\"' results.csv" using 10:13 with points pt 7 lc rgb '#d62728' ps 0.9 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic131072\" && $2==\"topk\"' results.csv" using 10:13 with points pt 5 lc rgb '#1f77b4' ps 0.9 title 'oracle top-k', "< awk -F, '$1==\"synthetic131072\" && $2==\"uniform\"' results.csv" using 10:13 with points pt 9 lc rgb '#7f7f7f' ps 0.9 title 'uniform', "< awk -F, '$1==\"synthetic131072\" && $2==\"oracle\"' results.csv" using 10:13 with points pt 13 lc rgb '#2ca02c' ps 0.9 title 'oracle sampling'
unset logscale
set output 'synthetic131072_entropy.svg'
set title 'synthetic131072: attention entropy per query (nats; ln n = 11.8)'
set xlabel 'entropy (nats)'
set ylabel 'queries'
set style fill solid 0.6
bw = 0.5
bin(x) = bw * floor(x / bw) + bw / 2
plot "< awk -F, '$1==\"synthetic131072\"' entropy.csv" using (bin($3)):(1.0) smooth frequency with boxes lc rgb '#1f77b4' notitle
set logscale xy
set output 'synthetic131072_error_by_entropy.svg'
set title 'synthetic131072: error per query vs its attention entropy (tuned@0.02)'
set xlabel 'attention entropy (nats)'
set ylabel '|o_hat - o| / |o| (mean over seeds)'
unset logscale x
set logscale y
set key bottom right
plot "< awk -F, '$1==\"synthetic131072\" && $2==\"lsh\"' per_query.csv" using 5:6 with points pt 7 lc rgb '#d62728' ps 0.8 title 'LSH (MagicPIG)', "< awk -F, '$1==\"synthetic131072\" && $2==\"topk\"' per_query.csv" using 5:6 with points pt 5 lc rgb '#1f77b4' ps 0.8 title 'oracle top-k', "< awk -F, '$1==\"synthetic131072\" && $2==\"uniform\"' per_query.csv" using 5:6 with points pt 9 lc rgb '#7f7f7f' ps 0.8 title 'uniform', "< awk -F, '$1==\"synthetic131072\" && $2==\"oracle\"' per_query.csv" using 5:6 with points pt 13 lc rgb '#2ca02c' ps 0.8 title 'oracle sampling'
set key top right
set logscale xy
