# The researchers' statistics (tgmorton/knowledge-politeness-llms at e41db28, Analysis/R_scripts/Study1.R
# and Study2.R) on the item tables `grace results tidy` writes, in base R only (Debian's r-base-core has
# no dplyr or tidyr): each model's rows are what Study1.R's filters leave, and each step is the call their
# script makes on them.
#
#   Rscript researchers_statistics.R STUDY1_ITEMS.csv STUDY2_ITEMS.csv
#
# Prints one CSV line per statistic: model,test,statistic,df,df2,p (df2: the ANOVA's residual df).
args <- commandArgs(trailingOnly = TRUE)
study1 <- read.csv(args[1], stringsAsFactors = FALSE, check.names = TRUE)
study2 <- read.csv(args[2], stringsAsFactors = FALSE, check.names = TRUE)
out <- function(model, test, statistic, df, df2, p) {
  cat(sprintf("%s,%s,%.17g,%.17g,%.17g,%.17g\n", model, test, statistic, df, df2, p))
}
cat("model,test,statistic,df,df2,p\n")

for (model in sort(unique(study1$model_name))) {
  df.data <- study1[study1$model_name == model, ]
  # Study1.R:20-26: integer X0..X3, rows with all four present.
  df.data <- df.data[!is.na(df.data$X0) & !is.na(df.data$X1) & !is.na(df.data$X2) & !is.na(df.data$X3), ]
  # Study1.R:37 gather + :118-121: the ANOVA on the X3 values, access and observe as read.csv reads them.
  df_anova <- data.frame(value = df.data$X3, access = df.data$access, observe = df.data$observe)
  anova_result <- summary(aov(value ~ access * observe, data = df_anova))[[1]]
  terms <- c("access", "observe", "access:observe")
  residual_df <- anova_result[nrow(anova_result), "Df"]
  for (i in seq_along(terms)) {
    out(model, paste0("anova ", terms[i]), anova_result[i, "F value"], anova_result[i, "Df"], residual_df,
        anova_result[i, "Pr(>F)"])
  }
  # Study1.R:108-115: spread by participant and t.test(x1 - x2, alternative = "greater") in one cell. The
  # item table is already one row per participant (item) with X0..X3 side by side: what spread() builds.
  run_paired_test <- function(access_level, observe_level, x1, x2) {
    cell <- df.data[df.data$access == access_level & df.data$observe == observe_level, ]
    t.test(cell[[paste0("X", x1)]] - cell[[paste0("X", x2)]], alternative = "greater")
  }
  comparisons <- list(c(3, 2, 2, 3), c(3, 1, 1, 3), c(3, 1, 1, 2), c(1, 1, 1, 2), c(1, 1, 1, 3),
                      c(2, 2, 2, 3), c(2, 1, 1, 3), c(2, 1, 1, 2))
  for (cmp in comparisons) {
    result <- run_paired_test(cmp[1], cmp[2], cmp[3], cmp[4])
    out(model, sprintf("t a%d o%d X%d-X%d", cmp[1], cmp[2], cmp[3], cmp[4]), result$statistic,
        result$parameter, NA, result$p.value)
  }
}

for (model in sort(unique(study2$model_name))) {
  df.data <- study2[study2$model_name == model & study2$Assessment != "" & !is.na(study2$Assessment), ]
  # Study2.R:87-97: 0 hearts, both goal, "wasn't amazing" against 0.125.
  data_0hearts <- df.data[df.data$State == "0 hearts" & df.data$Goal_simplified == "both", ]
  successes_0hearts <- sum(data_0hearts$Was.Wasn.t == "wasn't" & data_0hearts$Assessment == "amazing")
  test <- binom.test(successes_0hearts, nrow(data_0hearts), p = 0.125, alternative = "greater")
  out(model, "binom 0 hearts", successes_0hearts, nrow(data_0hearts), NA, test$p.value)
  # Study2.R:100-109: 1 heart, both goal, "amazing" (either frame).
  data_1heart <- df.data[df.data$State == "1 heart" & df.data$Goal_simplified == "both", ]
  successes_1heart <- sum(data_1heart$Assessment == "amazing")
  test <- binom.test(successes_1heart, nrow(data_1heart), p = 0.125, alternative = "greater")
  out(model, "binom 1 heart", successes_1heart, nrow(data_1heart), NA, test$p.value)
}
